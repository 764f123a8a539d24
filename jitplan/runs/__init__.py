"""Run state: the SQLite run registry, run metadata (RunMeta) and run folders. A low floor: imports only
jitplan.errors, jitplan.secrets and jitmodel's pure modules."""
