"""Samplers for JiT: Euler and Heun on the official time grid, CFG with an interval, exact and fast modes.

The official sampler (LTH14/JiT denoiser.py, see docs/sampling.md) integrates the flow ODE from t = 0
(noise) to t = 1 (image) over ``linspace(0, 1, steps + 1)``. Heun runs on the first ``steps - 1``
intervals and the last interval is always Euler (50 Heun steps: 2*49 + 1 = 99 evaluations). The velocity
comes from the x-prediction, v = (x_hat - z) / max(1 - t, t_eps). CFG mixes v_u + w (v_c - v_u) with
w = cfg only where ``t < interval_max`` and (``interval_min == 0`` or ``t > interval_min``), else w = 1.

Two modes give the same images (up to floating-point rounding):

* ``exact``: the official call sequence, a conditional forward then an unconditional forward for every
  evaluation, even where w = 1: 198 forwards per image at 50 Heun steps.
* ``fast``: one batched conditional+unconditional forward where w != 1, and only the conditional one
  where w == 1 (cfg 1, or t outside the interval): 99 * 2 - skipped forwards per image.

The state z stays in fp32 whatever the network runs in (bf16 autocast only wraps the network calls).

    >>> import torch
    >>> from jitmodel.config import DiffusionConfig, ModelConfig, SampleConfig
    >>> from jitmodel.sample import forwards_per_image, sample
    >>> cfg = SampleConfig(steps=50, cfg=2.9, interval_min=0.1, interval_max=1.0, mode="fast")
    >>> forwards_per_image(cfg)  # 99 evaluations, 11 of them at t <= 0.1 without guidance
    187
    >>> forwards_per_image(cfg.model_copy(update={"mode": "exact"}))
    198
    >>> x_hat = lambda z, t, y: torch.zeros_like(z)  # a "network" that always predicts the mean image
    >>> img, stats = sample(x_hat, torch.randn(2, 3, 8, 8), torch.tensor([0, 1]), cfg, num_classes=10)
    >>> (tuple(img.shape), stats.forwards)
    ((2, 3, 8, 8), 187.0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from torch import Tensor

from jitmodel import autoencoder as ae
from jitmodel.atomic import atomic_write
from jitmodel.checkpoint import checkpoint_model_config, describe, infer_model_config, load_checkpoint
from jitmodel.config import DiffusionConfig, ModelConfig, SampleConfig
from jitmodel.variants import get_variant

# x_hat(z (B, C, H, W) fp32, t (B,) fp32, y (B,) long) -> x prediction (B, C, H, W)
XHatFn = Callable[[Tensor, Tensor, Tensor], Tensor]
# on_step(i, t, z, v): the state and the guided velocity at the start of interval i (trajectory pictures)
StepHook = Callable[[int, float, Tensor, Tensor], None]


# --------------------------------------------------------------------------------------------------------
# The grid and the guidance schedule (pure)
# --------------------------------------------------------------------------------------------------------
def time_grid(steps: int, device: torch.device | str | None = None) -> Tensor:
    """The official grid: ``linspace(0, 1, steps + 1)`` in fp32 (t = 0 is noise, t = 1 the image)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float32, device=device)


def guidance_weights(grid: Tensor, cfg: float, interval_min: float, interval_max: float) -> list[float]:
    """CFG weight at each grid time, compared in fp32 exactly as the official mask is.

    >>> guidance_weights(time_grid(4), 3.0, 0.25, 1.0)  # t = 0, .25, .5, .75, 1
    [1.0, 1.0, 3.0, 3.0, 1.0]
    """
    if interval_min > interval_max:
        raise ValueError(f"CFG interval min {interval_min} is above max {interval_max}")
    mask = (grid < interval_max) & ((interval_min == 0) | (grid > interval_min))
    return [float(cfg) if bool(m) else 1.0 for m in mask.cpu()]


def evaluation_points(method: str, steps: int) -> list[int]:
    """Grid indices where the velocity is evaluated: Heun on intervals 0..steps-2, Euler on the last.

    >>> evaluation_points("heun", 3), evaluation_points("euler", 3)
    ([0, 1, 1, 2, 2], [0, 1, 2])
    """
    if method not in ("heun", "euler"):
        raise ValueError(f"unknown sampler {method!r}; choose heun or euler")
    pts: list[int] = []
    for i in range(steps - 1):
        pts += [i, i + 1] if method == "heun" else [i]
    return pts + [steps - 1]


def forwards_per_image(cfg: SampleConfig) -> int:
    """Network forwards per image (a batched cond+uncond pass counts as 2): the number ``sample`` reports."""
    weights = guidance_weights(time_grid(cfg.steps), cfg.cfg, cfg.interval_min, cfg.interval_max)
    pts = evaluation_points(cfg.method, cfg.steps)
    if cfg.mode == "exact":
        return 2 * len(pts)
    return sum(1 if weights[i] == 1.0 else 2 for i in pts)


# --------------------------------------------------------------------------------------------------------
# The sampler
# --------------------------------------------------------------------------------------------------------
@dataclass
class SampleStats:
    """What a sampling run cost: network calls and forwards per image (2 per batched cond+uncond pass)."""

    calls: int = 0
    forwards: float = 0.0
    evaluations: int = 0  # velocity evaluations (NFE): 99 for Heun-50


class _Counted:
    def __init__(self, x_hat: XHatFn, batch: int, autocast: torch.dtype | None, stats: SampleStats):
        self.x_hat, self.batch, self.autocast, self.stats = x_hat, batch, autocast, stats

    def __call__(self, z: Tensor, t: Tensor, y: Tensor) -> Tensor:
        self.stats.calls += 1
        self.stats.forwards += z.shape[0] / self.batch
        if self.autocast is None:
            return self.x_hat(z, t, y).float()
        with torch.autocast(device_type=z.device.type, dtype=self.autocast):
            return self.x_hat(z, t, y).float()


def sample(x_hat: XHatFn, z: Tensor, y: Tensor, cfg: SampleConfig, *, num_classes: int, t_eps: float = 0.05,
           autocast: torch.dtype | None = None, on_step: StepHook | None = None) -> tuple[Tensor, SampleStats]:
    """Integrate from noise ``z`` (already scaled by noise_scale) to images for labels ``y``.

    Returns the fp32 images in [-1, 1] (not clipped) and the forward counts. The null label (for the
    unconditional branch) is ``num_classes``, as in training's label dropout.
    """
    if y.shape[0] != z.shape[0]:
        raise ValueError(f"{y.shape[0]} labels for {z.shape[0]} noise tensors")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got {y.min().item()}..{y.max().item()}")
    grid = time_grid(cfg.steps, device=z.device)
    weights = guidance_weights(grid, cfg.cfg, cfg.interval_min, cfg.interval_max)
    stats = SampleStats()
    net = _Counted(x_hat, z.shape[0], autocast, stats)
    null = torch.full_like(y, num_classes)
    bsz = z.shape[0]

    def velocity(z: Tensor, i: int) -> Tensor:
        stats.evaluations += 1
        t = grid[i].expand(bsz)  # (B,)
        denom = (1.0 - t).clamp_min(t_eps).view(-1, 1, 1, 1)
        w = weights[i]
        if cfg.mode == "exact":  # official order: conditional, then unconditional, separately
            v_c = (net(z, t, y) - z) / denom
            v_u = (net(z, t, null) - z) / denom
            return v_u + w * (v_c - v_u)
        if w == 1.0:  # guidance is the identity here: the unconditional branch cannot change v
            return (net(z, t, y) - z) / denom
        x_c, x_u = net(torch.cat([z, z]), torch.cat([t, t]), torch.cat([y, null])).chunk(2)
        v_c, v_u = (x_c - z) / denom, (x_u - z) / denom
        return v_u + w * (v_c - v_u)

    z = z.float()
    for i in range(cfg.steps):
        dt = grid[i + 1] - grid[i]
        v = velocity(z, i)
        if on_step is not None:
            on_step(i, float(grid[i]), z, v)
        if cfg.method == "heun" and i < cfg.steps - 1:
            z_euler = z + dt * v
            z = z + dt * 0.5 * (v + velocity(z_euler, i + 1))
        else:
            z = z + dt * v
    return z, stats


def x_hat_from_velocity(z: Tensor, v: Tensor, t: float, t_eps: float = 0.05) -> Tensor:
    """Invert v = (x_hat - z) / max(1 - t, t_eps): the (guided) prediction behind a velocity."""
    return z + max(1.0 - t, t_eps) * v


# --------------------------------------------------------------------------------------------------------
# Noise and labels
# --------------------------------------------------------------------------------------------------------
def noise_for_ids(ids: list[int], seed: int, shape: tuple[int, int, int], noise_scale: float = 1.0,
                  device: torch.device | str = "cpu") -> Tensor:
    """Noise for images by id, each from its own generator: the same image whatever the batch or rank.

    >>> a = noise_for_ids([3, 4], seed=0, shape=(3, 4, 4))
    >>> torch.equal(a[1], noise_for_ids([4], seed=0, shape=(3, 4, 4))[0])
    True
    """
    out = torch.empty((len(ids), *shape), dtype=torch.float32)
    for k, i in enumerate(ids):
        g = torch.Generator().manual_seed(seed * 1_000_003 + int(i))
        out[k] = torch.randn(shape, generator=g)
    return (out * noise_scale).to(device)


def parse_classes(text: str, num_classes: int) -> list[int]:
    """"207,360" -> [207, 360]; each must be a class index of the checkpoint (ValueError otherwise)."""
    try:
        classes = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise ValueError(f"--classes takes comma-separated integers, got {text!r}") from None
    if not classes:
        raise ValueError("--classes is empty")
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"class index {bad[0]} is out of range: the checkpoint has {num_classes} classes "
                         f"(0..{num_classes - 1})")
    return classes


# --------------------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------------------
def to_uint8(x: Tensor) -> Tensor:
    """[-1, 1] images (N, C, H, W) -> uint8 the official way: round(clip(255 * (x + 1) / 2))."""
    return ((x.detach().float().cpu() + 1) / 2 * 255).clamp(0, 255).round().to(torch.uint8)


def make_grid(images: Tensor, ncol: int | None = None, pad: int = 2, fill: int = 255) -> Tensor:
    """uint8 (N, C, H, W) -> one (H', W', C) picture with ``ncol`` images per row."""
    n, c, h, w = images.shape
    ncol = ncol or min(n, 8)
    nrow = -(-n // ncol)
    out = torch.full((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), fill, dtype=torch.uint8)
    for k in range(n):
        r, q = divmod(k, ncol)
        out[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = images[k]
    return out.permute(1, 2, 0).contiguous()


def save_png(path: str | Path, hwc: Tensor) -> Path:
    """Write an (H, W, 3) or (H, W) uint8 picture as PNG atomically (temp file, fsync, rename)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = hwc.numpy()
    img = Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr)
    atomic_write(path, lambda f: img.save(f, format="PNG"))
    return path


# --------------------------------------------------------------------------------------------------------
# A checkpoint, ready to sample (always built from the checkpoint's own description)
# --------------------------------------------------------------------------------------------------------
@dataclass
class Loaded:
    """A denoiser with the chosen weights, its configs and class names (from the checkpoint)."""

    denoiser: torch.nn.Module  # a jitmodel.denoiser.Denoiser, in eval mode
    model_cfg: ModelConfig  # at the *served* image size
    trained_cfg: ModelConfig  # as trained
    diffusion: DiffusionConfig
    classes: list[str]
    sample_defaults: SampleConfig
    trained_steps: int | None = None  # optimizer steps behind these weights (None: the file does not say)
    # Model space -> pixels in [-1, 1]: the identity, or the autoencoder's decoder for a latent model
    to_pixels: Callable[[Tensor], Tensor] = lambda x: x

    @property
    def x_hat(self) -> XHatFn:
        return cast(XHatFn, self.denoiser.x_hat)  # a Denoiser's method; nn.Module's typing cannot say so


_WEIGHTS = {"ema1": "ema1", "ema2": "ema2", "raw": "model"}


def _diffusion_from(ckpt: dict) -> DiffusionConfig:
    tc = ckpt.get("train_config") or {}
    if isinstance(tc, dict) and isinstance(tc.get("diffusion"), dict):
        return DiffusionConfig.model_validate(tc["diffusion"])
    args = ckpt.get("args") or {}  # official checkpoints: argparse names
    keys = {"noise_scale": "noise_scale", "t_eps": "t_eps", "P_mean": "P_mean", "P_std": "P_std"}
    return DiffusionConfig(**{k: args[a] for k, a in keys.items() if a in args})


def load_for_sampling(path: str | Path, *, ema: str = "ema1", img_size: int | None = None,
                      variant: str | None = None, device: torch.device | str = "cpu") -> Loaded:
    """Build the denoiser a checkpoint describes, load ``ema`` weights, and serve it at ``img_size``.

    A different image size regenerates the fixed sin-cos ``pos_embed`` and the RoPE tables for the new
    patch grid. ValueError (one line naming both configurations) when the checkpoint cannot serve the
    request: another variant or patch size, or an image size that the patch does not divide.
    """
    from jitmodel.denoiser import Denoiser  # lazy: start-up (numpy, pynvml, torch)

    if ema not in _WEIGHTS:
        raise ValueError(f"--ema must be ema1, ema2 or raw, got {ema!r}")
    # Mapped, not read: only the chosen weights are copied (an H/16 file is ~19 GB of model, EMAs and AdamW state,
    # more than a Mac's unified memory); the rest stays in the reclaimable page cache.
    ckpt = load_checkpoint(path, map_location="cpu", mmap=True)
    mc = checkpoint_model_config(ckpt)
    size = img_size or mc.img_size
    if variant is not None and mc.factory is None:
        try:
            want = get_variant(variant)
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        if want.name != mc.variant:
            raise ValueError(f"checkpoint is {describe(mc)}; it cannot serve a {want.name} request at {size}px "
                             f"(patch {mc.spec.patch} vs {want.patch}, and the weights are shaped for the former)")
    if mc.factory is None and size % mc.spec.patch:
        raise ValueError(f"checkpoint is {describe(mc)} with patch {mc.spec.patch}; it cannot serve {size}px "
                         f"(not a multiple of {mc.spec.patch})")
    sd = ckpt.get(_WEIGHTS[ema])
    if sd is None:
        raise ValueError(f"{path} holds no {ema} weights; use --ema raw")
    sd = {k if k.startswith("net.") else f"net.{k.removeprefix('module.')}": v for k, v in sd.items()}
    inferred = mc if mc.factory else infer_model_config({k: tuple(v.shape) for k, v in sd.items()})
    if (inferred.variant, inferred.img_size, inferred.num_classes) != (mc.variant, mc.img_size, mc.num_classes):
        raise ValueError(f"checkpoint says {describe(mc)} but its {ema} weights are {describe(inferred)}")
    den = Denoiser(mc, _diffusion_from(ckpt))
    den.load_state_dict(sd, strict=True)
    if size != mc.img_size:
        if mc.factory is not None:
            raise ValueError(f"{mc.factory} was trained at {mc.img_size}px and is served at that size only")
        den.net.set_grid(size)
    den = den.to(device).eval()
    served = ModelConfig.model_validate({**mc.model_dump(), "img_size": size})
    classes = [str(c) for c in (ckpt.get("classes") or range(mc.num_classes))]
    tc = ckpt.get("train_config") or {}
    defaults = SampleConfig.model_validate(tc["sample"]) if isinstance(tc.get("sample"), dict) else SampleConfig()
    step = ckpt.get("step")
    return Loaded(den, served, mc, den.diff_cfg, classes, defaults, int(step) if isinstance(step, int) else None,
                  ae.decoder_for(tc.get("data"), device))



SHORT_RUN_STEPS = 1000  # the digits demo needs about 1,400 steps of batch 32 before 80 % of its samples read right


def short_run_note(trained_steps: int | None) -> str | None:
    """A warning for weights trained far too briefly to draw anything but noise (None when not).

        >>> short_run_note(120).split(";")[0]
        'note: these weights trained 120 optimizer steps'
        >>> short_run_note(50_000) is None, short_run_note(None) is None
        (True, True)
    """
    if trained_steps is None or trained_steps >= SHORT_RUN_STEPS:
        return None
    return (f"note: these weights trained {trained_steps} optimizer steps; a diffusion model draws noise-like "
            f"samples for its first thousand or so (the digits demo: about 1,400 steps of batch 32 before 80 % "
            f"read as their digit): train longer, or continue the run (jitplan launch RUN_DIR/train.yaml --local)")
