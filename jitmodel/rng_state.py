"""Every random stream a training rank draws from, captured as weights-only-safe values and restored.

torch's CPU and CUDA generators, numpy's and Python's global state, and the denoiser's own generator (t,
noise, label dropout). A checkpoint stores one capture per rank (``jitmodel.checkpoint``).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any


def capture_rng(generator: Any = None) -> dict[str, Any]:
    """Every RNG the run draws from, as weights-only-safe values."""
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    assert not isinstance(keys, str), kind  # ("MT19937", uint32 keys, ...): the legacy tuple form
    py = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": [py[0], list(py[1]), py[2]],
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng(state: Mapping[str, Any], generator: Any = None) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"].to("cpu") if hasattr(state["generator"], "to") else state["generator"])
