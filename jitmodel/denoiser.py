"""The JiT denoiser (the training objective around the network) and its exponential moving averages.

Official recipe (LTH14/JiT ``denoiser.py``; ``shared/reference/jit_repo.md`` §2): t ~ logit-normal
(P_mean -0.8, P_std 0.8); ``z = t*x + (1-t)*e`` with ``e = noise_scale * N(0, I)``; labels dropped to the
null class ``num_classes`` with probability 0.1 (training mode only); the network output is read as x
and the L2 loss is taken in v-space with (1-t) clamped at t_eps = 0.05. Other prediction types and loss
spaces (``DiffusionConfig.prediction`` / ``loss_space``) go through ``jitmodel.objectives``.
Two EMAs (0.9999, 0.9996) of every parameter, the frozen ``pos_embed`` included, are updated once per
optimizer step. State-dict keys are ``net.*`` like official checkpoints.

    >>> import torch
    >>> from jitmodel.config import DiffusionConfig, ModelConfig
    >>> den = Denoiser(ModelConfig(variant="JiT-Tiny/4", img_size=16, num_classes=10), DiffusionConfig())
    >>> ema = EMA(den)
    >>> g = torch.Generator().manual_seed(0)
    >>> loss = den(torch.rand(4, 3, 16, 16) * 2 - 1, torch.randint(0, 10, (4,)), generator=g)
    >>> loss.backward(); ema.update(den)
    >>> sorted(ema.state_dict("ema1"))[:2]
    ['net.blocks.0.adaLN_modulation.1.bias', 'net.blocks.0.adaLN_modulation.1.weight']
    >>> with ema.swap_in(den, "ema2"):
    ...     v = den.velocity(torch.randn(2, 3, 16, 16), torch.tensor([0.3, 0.9]), torch.tensor([1, 10]))
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from jitmodel import custom, objectives
from jitmodel.config import DiffusionConfig, ModelConfig
from jitmodel.model import JiT


class Denoiser(nn.Module):
    """Wraps the JiT network as ``net`` and computes the training loss for clean images in [-1, 1]."""

    def __init__(self, model_cfg: ModelConfig, diff_cfg: DiffusionConfig, *, device: Any = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        self.model_cfg, self.diff_cfg = model_cfg, diff_cfg
        self.num_classes = model_cfg.num_classes
        self.net = JiT(model_cfg, device=device, dtype=dtype) if model_cfg.factory is None else \
            custom.build_model(model_cfg.model_dump(), device=device, dtype=dtype)  # a user's model (docs/models.md)

    # -- randomness (every draw takes an optional generator so resumed training is reproducible) --
    def drop_labels(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Replace each label by the null class with probability ``label_drop_prob``."""
        drop = torch.rand(labels.shape[0], device=labels.device, generator=generator) < self.diff_cfg.label_drop_prob
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def sample_t(self, n: int, device: Any = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Logit-normal times: sigmoid(N(P_mean, P_std^2)), shape (n,)."""
        s = torch.randn(n, device=device, generator=generator)
        return torch.sigmoid(s * self.diff_cfg.P_std + self.diff_cfg.P_mean)

    # -- the objective --
    def loss_at(self, x: torch.Tensor, labels: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Loss for given times t (B,) and unit noise (like x); deterministic, no label dropout.

        ``noise`` is scaled by ``noise_scale`` here: e = noise_scale * noise, z = t*x + (1-t)*e.
        """
        e = noise * self.diff_cfg.noise_scale
        tb = objectives.expand_t(t, x)
        z = tb * x + (1 - tb) * e
        out = self.net(z, t.flatten(), labels)
        d = self.diff_cfg
        return objectives.loss(out, x, e, z, tb, d.prediction, d.loss_space, d.t_eps)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Scalar training loss. Draw order (as official): label dropout (training only), t, noise.

        ``generator`` (optional) must live on ``x``'s device; without it the global RNG is used.
        """
        if x.ndim != 4:
            raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(x.shape)}")
        if self.training and self.diff_cfg.label_drop_prob > 0:
            labels = self.drop_labels(labels, generator)
        t = self.sample_t(x.shape[0], device=x.device, generator=generator)
        noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        return self.loss_at(x, labels, t, noise)

    # -- what the sampler calls: the network output read as x, v or eps --
    def predict(self, z: torch.Tensor, t: torch.Tensor, y: torch.Tensor, kind: str = "v",
                t_eps: float | None = None) -> torch.Tensor:
        """Network prediction at (z, t, y) converted to ``kind`` (x, v or eps); t is (B,) or a scalar."""
        t = torch.as_tensor(t, dtype=torch.float32, device=z.device)
        t_flat = t.expand(z.shape[0]) if t.ndim == 0 else t.flatten()
        out = self.net(z, t_flat, y).float()
        eps = self.diff_cfg.t_eps if t_eps is None else t_eps
        return objectives.convert(out, z, t_flat, self.diff_cfg.prediction, kind, eps)

    def x_hat(self, z: torch.Tensor, t: torch.Tensor, y: torch.Tensor, t_eps: float | None = None) -> torch.Tensor:
        """The clean-image estimate x̂(z, t, y)."""
        return self.predict(z, t, y, "x", t_eps)

    def velocity(self, z: torch.Tensor, t: torch.Tensor, y: torch.Tensor, t_eps: float | None = None) -> torch.Tensor:
        """The ODE velocity v̂(z, t, y) = dz/dt (official sampler: (x̂ - z) / max(1-t, t_eps))."""
        return self.predict(z, t, y, "v", t_eps)


@contextlib.contextmanager
def swapped(params: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> Iterator[None]:
    """Copy ``values`` into ``params`` for the block, then restore the originals (EMA swaps)."""
    with torch.no_grad():
        saved = [p.detach().clone() for p in params]
        for p, v in zip(params, values, strict=True):
            p.copy_(v)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)


def _ema_index(which: int | str) -> int:
    names = {0: 0, 1: 1, "ema1": 0, "ema2": 1}
    if which not in names:
        raise ValueError(f"unknown EMA {which!r}; use 0, 1, 'ema1' or 'ema2'")
    return names[which]


class EMA:
    """Two fp32 shadow copies of every parameter of ``module`` (frozen ones included, as official).

    ``update`` after each optimizer step: ``s = d*s + (1-d)*p`` (official: no warm-up, no bias correction),
    starting from a copy of the initial weights. With ``warmup=True`` the decay of update number ``step``
    (0-based) is ``min(d, (1+step)/(10+step))``, as common diffusion trainers do: 0.1 at the first update,
    0.9 at step 80, 0.99 at step 890, so a short run is not an average with the random initial weights.
    Build it on the unwrapped module (not a DDP/compiled wrapper) so the keys match ``module.state_dict()``.
    """

    def __init__(self, module: nn.Module, decays: Sequence[float] = (0.9999, 0.9996), *, warmup: bool = False):
        if len(decays) != 2 or not all(0.0 <= d <= 1.0 for d in decays):
            raise ValueError(f"EMA needs two decays in [0, 1], got {tuple(decays)}")
        self.decays: tuple[float, ...] = tuple(float(d) for d in decays)
        self.warmup = warmup
        self.updates = 0  # updates since construction; ``update(step=...)`` overrides it (resume)
        self._module = module
        self.names = [n for n, _ in module.named_parameters()]
        self.shadows = [[p.detach().float().clone() for p in module.parameters()] for _ in self.decays]

    def _params(self, module: nn.Module) -> list[torch.Tensor]:
        params = [p.detach() for p in module.parameters()]
        if len(params) != len(self.names):
            raise ValueError(f"module has {len(params)} parameters but the EMA tracks {len(self.names)}")
        return [p if p.dtype == torch.float32 else p.float() for p in params]

    def decays_at(self, step: int) -> tuple[float, ...]:
        """The decays update number ``step`` (0-based) applies: the configured ones, or less during warm-up."""
        if not self.warmup:
            return self.decays
        ramp = (1.0 + step) / (10.0 + step)
        return tuple(min(d, ramp) for d in self.decays)

    @torch.no_grad()
    def update(self, module: nn.Module | None = None, step: int | None = None) -> None:
        """One EMA step of both shadows towards the current parameters (``step``: optimizer steps done before)."""
        params = self._params(module if module is not None else self._module)
        decays = self.decays_at(self.updates if step is None else step)
        self.updates = (self.updates if step is None else step) + 1
        for d, shadow in zip(decays, self.shadows, strict=True):
            if hasattr(torch, "_foreach_mul_"):
                torch._foreach_mul_(shadow, d)
                torch._foreach_add_(shadow, params, alpha=1 - d)
            else:  # pragma: no cover - very old torch
                for s, p in zip(shadow, params, strict=True):
                    s.mul_(d).add_(p, alpha=1 - d)

    def state_dict(self, which: int | str) -> dict[str, torch.Tensor]:
        """``module.state_dict()`` with the chosen EMA's values (fp32) in place of the parameters."""
        vals = dict(zip(self.names, self.shadows[_ema_index(which)], strict=True))
        return {k: vals.get(k, v) for k, v in self._module.state_dict().items()}

    @torch.no_grad()
    def load_state_dicts(self, sd1: Mapping[str, torch.Tensor], sd2: Mapping[str, torch.Tensor]) -> None:
        """Restore both shadows from two state dicts (as written by ``state_dict``); checks keys and shapes."""
        for shadow, sd in zip(self.shadows, (sd1, sd2), strict=True):
            missing = [n for n in self.names if n not in sd]
            if missing:
                raise ValueError(f"EMA state dict lacks {len(missing)} parameters, e.g. {missing[:3]}")
            for n, s in zip(self.names, shadow, strict=True):
                if tuple(sd[n].shape) != tuple(s.shape):
                    raise ValueError(f"EMA {n}: shape {tuple(sd[n].shape)} does not match {tuple(s.shape)}")
                s.copy_(sd[n])

    @contextlib.contextmanager
    def swap_in(self, module: nn.Module, which: int | str = "ema1") -> Iterator[nn.Module]:
        """Temporarily load an EMA into ``module`` (sampling, evaluation); the weights are restored after."""
        shadow = self.shadows[_ema_index(which)]
        params = list(module.parameters())
        if len(params) != len(shadow):
            raise ValueError(f"module has {len(params)} parameters but the EMA tracks {len(shadow)}")
        with swapped(params, shadow):
            yield module

    def to(self, device: Any) -> EMA:
        """Move the shadows (e.g. to the GPU, where the official code keeps them)."""
        self.shadows = [[s.to(device) for s in shadow] for shadow in self.shadows]
        return self
