"""Test doubles that speak real protocols: the Vast.ai API fake (vast_server), a loopback sshd, hand-made plans."""
