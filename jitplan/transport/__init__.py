"""How to reach a machine: SSH targets and the ssh/rsync argv built for them (pure, no subprocess).
A low floor: imports only jitplan.errors."""
