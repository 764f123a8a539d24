"""jitmodel: a faithful JiT (Li & He, 2025) trainer and sampler that runs wherever torchrun does.

``jitmodel.config`` and ``jitmodel.variants`` are pure Python (no torch) so that planners can read
them quickly; everything else needs torch (``pip install 'jitplan[train]'``).
"""

__version__ = "0.1.0"
