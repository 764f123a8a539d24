"""EMAs kept off the accelerator (``memory.ema_device: cpu``) and the EMA placement of a run.

``HostEMA`` keeps both fp32 shadows in (pinned, on CUDA) host memory: 8 bytes per parameter leave the
GPU. After each optimizer step the parameters are copied into a pinned staging buffer (asynchronously
on CUDA) and a helper thread applies ``s = d*s + (1-d)*p`` while the next step runs; anything that
reads the shadows waits for it first. The arithmetic is the same ``_foreach`` ops as ``EMA.update``, so
the shadows are bitwise those of an on-device EMA. When the parameters are sharded (FSDP2) each rank
keeps the shadows of its own shard.

``ema_every: k`` updates the EMAs every k optimizer steps with decay ``d**k``: the same horizon in images
(``1 / (1 - d)`` steps of the effective batch), a k-th of the EMA work.

    >>> round(ema_decays((0.9999, 0.9996), every=4)[0], 6)
    0.9996
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from jitmodel.denoiser import EMA, swapped
from jitmodel.strategy import full, is_sharded, local_like


def ema_decays(decays: Sequence[float], every: int) -> tuple[float, ...]:
    """Per-update decays for an EMA updated every ``every`` steps: ``d**every`` (same horizon)."""
    return tuple(float(d) ** every for d in decays)


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if is_sharded(t) else t  # type: ignore[attr-defined]  # a DTensor when sharded


def _host(t: torch.Tensor, pin: bool) -> torch.Tensor:
    out = torch.empty(t.shape, dtype=torch.float32, device="cpu", pin_memory=pin)
    out.copy_(t)
    return out


class HostEMA(EMA):
    """Two fp32 shadows in host memory, updated beside the training step (see the module docstring)."""

    def __init__(self, module: nn.Module, decays: Sequence[float] = (0.9999, 0.9996), *, warmup: bool = False):
        super().__init__(module, decays, warmup=warmup)
        self._params_ref = list(module.parameters())
        pin = any(_local(p).is_cuda for p in self._params_ref) and torch.cuda.is_available()
        self.shadows = [[_host(_local(s), pin) for s in shadow] for shadow in self.shadows]
        self._staging = [_host(s, pin) for s in self.shadows[0]]
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def wait(self) -> None:
        """Block until the last update has been applied (re-raises its error)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def _apply(self, event: Any, decays: Sequence[float]) -> None:
        try:
            if event is not None:
                event.synchronize()
            with torch.no_grad():
                for d, shadow in zip(decays, self.shadows, strict=True):
                    torch._foreach_mul_(shadow, d)
                    torch._foreach_add_(shadow, self._staging, alpha=1 - d)
        except BaseException as e:  # noqa: BLE001 - handed to the training thread by wait()
            self._error = e

    @torch.no_grad()
    def update(self, module: nn.Module | None = None, step: int | None = None) -> None:
        self.wait()
        decays = self.decays_at(self.updates if step is None else step)
        self.updates = (self.updates if step is None else step) + 1
        params = [_local(p) for p in self._params(module if module is not None else self._module)]
        for buf, p in zip(self._staging, params, strict=True):
            buf.copy_(p, non_blocking=True)
        event = None
        if params and params[0].is_cuda:
            event = torch.cuda.Event()
            event.record()
        self._thread = threading.Thread(target=self._apply, args=(event, decays), name="ema-host", daemon=True)
        self._thread.start()

    def _full(self, s: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        if not is_sharded(p):
            return s
        from torch.distributed.tensor import DTensor

        dp: Any = p  # a DTensor (is_sharded): its mesh and placements
        d = DTensor.from_local(s.to(p.device), dp.device_mesh, dp.placements, shape=p.shape, stride=p.stride())
        return full(d)

    def state_dict(self, which: int | str) -> dict[str, torch.Tensor]:
        self.wait()
        idx = 0 if which in (0, "ema1") else 1 if which in (1, "ema2") else None
        if idx is None:
            return super().state_dict(which)  # raises the usual error
        vals = {n: self._full(s, p) for n, s, p in zip(self.names, self.shadows[idx], self._params_ref, strict=True)}
        return {k: vals.get(k, v) for k, v in self._module.state_dict().items()}

    @torch.no_grad()
    def load_state_dicts(self, sd1: Mapping[str, torch.Tensor], sd2: Mapping[str, torch.Tensor]) -> None:
        self.wait()
        for shadow, sd in zip(self.shadows, (sd1, sd2), strict=True):
            missing = [n for n in self.names if n not in sd]
            if missing:
                raise ValueError(f"EMA state dict lacks {len(missing)} parameters, e.g. {missing[:3]}")
            for n, s, p in zip(self.names, shadow, self._params_ref, strict=True):
                if tuple(sd[n].shape) != tuple(p.shape):
                    raise ValueError(f"EMA {n}: shape {tuple(sd[n].shape)} does not match {tuple(p.shape)}")
                s.copy_(_local(local_like(sd[n], p)))

    @contextlib.contextmanager
    def swap_in(self, module: nn.Module, which: int | str = "ema1") -> Iterator[nn.Module]:
        self.wait()
        shadow = self.shadows[0 if which in (0, "ema1") else 1]
        with swapped([_local(p) for p in module.parameters()], shadow):
            yield module


def build_ema(module: nn.Module, decays: Sequence[float], device: str, every: int, *, warmup: bool = False) -> EMA:
    """The run's EMA: on the parameters' device (sharded with them) or on the host; decays for ``every``
    (with warm-up the ramp caps d**every by update number, a close stand-in for the per-step ramp)."""
    ds = ema_decays(decays, every)
    return HostEMA(module, ds, warmup=warmup) if device == "cpu" else EMA(module, ds, warmup=warmup)


def full_ema_state(ema: EMA, which: str) -> dict[str, torch.Tensor]:
    """One EMA as a full state dict on the CPU (gathers shards; every rank calls it)."""
    return {k: full(v) for k, v in ema.state_dict(which).items()}


def load_ema_state(ema: EMA, sd1: Mapping[str, torch.Tensor], sd2: Mapping[str, torch.Tensor]) -> None:
    """Load two full EMA state dicts, scattering them into sharded shadows where the run shards."""
    if isinstance(ema, HostEMA) or not any(is_sharded(s) for s in ema.shadows[0]):
        ema.load_state_dicts(sd1, sd2)
        return
    lay = dict(zip(ema.names, ema.shadows[0], strict=True))
    ema.load_state_dicts(*({n: local_like(v, lay[n]) if n in lay else v for n, v in sd.items()} for sd in (sd1, sd2)))
