"""Prediction targets of the straight noise path and the conversions between them (pure torch functions).

The path (JiT, rectified flow): ``z = t*x + (1-t)*e`` with t in [0, 1], t = 0 pure noise, t = 1 clean,
``e`` the (scaled) Gaussian noise. Its velocity is ``v = dz/dt = x - e``. The network output is read as
one of x, v, eps ("prediction") and converted to the others given (z, t); a division by (1-t) or t uses
``max(1-t, t_eps)`` / ``max(t, t_eps)``, exactly as the official JiT code clamps (1-t) by t_eps = 0.05.

    from x:    v = (x - z) / max(1-t, t_eps)         eps = (z - t*x) / max(1-t, t_eps)
    from v:    x = z + (1-t) * v                     eps = z - t*v
    from eps:  x = (z - (1-t)*eps) / max(t, t_eps)   v = (z - eps) / max(t, t_eps)

The loss is an L2 in ``loss_space``: the prediction and the true value of the predicted quantity are both
converted to that space with the same function, so a perfect prediction has zero loss and x-prediction
with a v-loss is the official ``((x - x_hat) / max(1-t, t_eps))**2``. See docs/objectives.md.

    >>> import torch
    >>> x, e, t = torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.tensor([0.5])
    >>> z = interpolate(x, e, t)
    >>> to_v(x, z, t, "x").flatten().tolist()  # v = x - e
    [1.0, 1.0, 1.0, 1.0]
    >>> loss(torch.zeros_like(x), x, e, z, t, prediction="x", loss_space="v").item()  # (1 / 0.5)**2
    4.0
"""

from __future__ import annotations

from typing import Literal

import torch

Kind = Literal["x", "v", "eps"]
KINDS: tuple[str, ...] = ("x", "v", "eps")


def _check(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown prediction/loss space {kind!r}; expected one of {', '.join(KINDS)}")


def expand_t(t: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-sample time (B,) or a scalar to (B, 1, 1, ...) matching ``like``."""
    if not (isinstance(t, torch.Tensor) and t.is_floating_point()):
        t = torch.as_tensor(t, dtype=torch.float32)
    t = t.to(like.device)
    if t.ndim == 0:
        return t
    if t.numel() == like.shape[0]:
        return t.reshape(-1, *([1] * (like.ndim - 1)))
    if t.ndim == like.ndim:  # already broadcastable
        return t
    raise ValueError(f"t has shape {tuple(t.shape)}, expected () or ({like.shape[0]},) for a batch of {like.shape[0]}")


def interpolate(x: torch.Tensor, e: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """The noisy sample ``z = t*x + (1-t)*e``."""
    t = expand_t(t, x)
    return t * x + (1 - t) * e


def target(x: torch.Tensor, e: torch.Tensor, kind: str) -> torch.Tensor:
    """The true value of ``kind`` for clean image x and noise e: x, ``v = x - e`` or e."""
    _check(kind)
    if kind == "x":
        return x
    return x - e if kind == "v" else e


def to_x(out: torch.Tensor, z: torch.Tensor, t: torch.Tensor | float, kind: str, t_eps: float = 0.05) -> torch.Tensor:
    """Read ``out`` (a prediction of ``kind``) as the clean image x."""
    _check(kind)
    t = expand_t(t, z)
    if kind == "x":
        return out
    if kind == "v":
        return z + (1 - t) * out
    return (z - (1 - t) * out) / t.clamp_min(t_eps)


def to_v(out: torch.Tensor, z: torch.Tensor, t: torch.Tensor | float, kind: str, t_eps: float = 0.05) -> torch.Tensor:
    """Read ``out`` (a prediction of ``kind``) as the velocity v = dz/dt."""
    _check(kind)
    t = expand_t(t, z)
    if kind == "x":
        return (out - z) / (1 - t).clamp_min(t_eps)
    if kind == "v":
        return out
    return (z - out) / t.clamp_min(t_eps)


def to_eps(out: torch.Tensor, z: torch.Tensor, t: torch.Tensor | float, kind: str, t_eps: float = 0.05) -> torch.Tensor:
    """Read ``out`` (a prediction of ``kind``) as the noise e."""
    _check(kind)
    t = expand_t(t, z)
    if kind == "x":
        return (z - t * out) / (1 - t).clamp_min(t_eps)
    if kind == "v":
        return z - t * out
    return out


_CONVERT = {"x": to_x, "v": to_v, "eps": to_eps}


def convert(out: torch.Tensor, z: torch.Tensor, t: torch.Tensor | float, src: str, dst: str,
            t_eps: float = 0.05) -> torch.Tensor:
    """Convert a prediction of kind ``src`` into kind ``dst`` (x, v or eps)."""
    _check(dst)
    return _CONVERT[dst](out, z, t, src, t_eps)


def per_sample_loss(out: torch.Tensor, x: torch.Tensor, e: torch.Tensor, z: torch.Tensor, t: torch.Tensor | float,
                    prediction: str = "x", loss_space: str = "v", t_eps: float = 0.05) -> torch.Tensor:
    """Mean over all non-batch dims of (pred - true)^2 in ``loss_space``; shape (B,), at least fp32."""
    pred = convert(out.to(torch.promote_types(out.dtype, torch.float32)), z, t, prediction, loss_space, t_eps)
    true = convert(target(x, e, prediction), z, t, prediction, loss_space, t_eps)
    return (pred - true).pow(2).mean(dim=tuple(range(1, out.ndim)))


def loss(out: torch.Tensor, x: torch.Tensor, e: torch.Tensor, z: torch.Tensor, t: torch.Tensor | float,
         prediction: str = "x", loss_space: str = "v", t_eps: float = 0.05) -> torch.Tensor:
    """The training loss: ``per_sample_loss`` averaged over the batch (a scalar)."""
    return per_sample_loss(out, x, e, z, t, prediction, loss_space, t_eps).mean()
