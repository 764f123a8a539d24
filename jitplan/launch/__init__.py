"""Launch backends: local torchrun, any SSH host, cloud providers; the run registry and supervision."""
