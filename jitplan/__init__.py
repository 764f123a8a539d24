"""jitplan: plan, check and launch JiT training on the GPUs you can rent.

The CLI (``jitplan``) must start fast: nothing here imports torch or vastai.
"""

__version__ = "0.1.0"
