"""``python -m jitmodel ...`` runs the ``jitmodel`` command (``torchrun -m jitmodel evaluate ...`` too)."""

from jitmodel.cli import main

if __name__ == "__main__":
    main()
