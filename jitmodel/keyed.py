"""The datasets' common base: items keyed by ``(index, flip)`` from ``jitmodel.data.ResumableSampler``.

A bare int means no flip. ``kill_after_items`` is the DataLoader fault-injection hook (docs/training.md):
armed by ``jitmodel.data.arm_worker_kill``, it SIGKILLs DataLoader worker 0 after that many items.
"""

from __future__ import annotations

import os
import signal

import torch
from torch.utils.data import Dataset, get_worker_info


class KeyedDataset(Dataset):
    """Subclasses give ``_load(index)`` (flipped here), or ``_load_flipped`` when a flip is not a mirror."""

    classes: list[str]
    kill_after_items: int | None = None  # armed by arm_worker_kill(); fires in DataLoader worker 0 only
    _served = 0

    def _load(self, index: int) -> tuple[torch.Tensor, int]:
        raise NotImplementedError

    def _load_flipped(self, index: int, flip: bool) -> tuple[torch.Tensor, int]:
        img, label = self._load(index)
        return (img.flip(-1) if flip else img), label

    def __getitem__(self, key: int | tuple[int, bool]) -> tuple[torch.Tensor, int]:
        index, flip = key if isinstance(key, tuple) else (key, False)
        if self.kill_after_items is not None:
            info = get_worker_info()
            if info is not None and info.id == 0:
                self._served += 1
                if self._served > self.kill_after_items:
                    os.kill(os.getpid(), signal.SIGKILL)  # like the kernel's OOM killer
        return self._load_flipped(index, flip)
