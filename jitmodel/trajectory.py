"""Watch noise turn into an image: the state z_t, z_t with the patch grid, and x̂ at every sampling step.

Frames come from the real sampler (``jitmodel.sample.sample``) through its step hook, so they are the
states the images are made of: frame i is the state at t_i = i / steps and the (guided) prediction
x̂ = z + max(1 - t, t_eps) v behind the velocity the sampler took there; the last frame is the image.
Outputs: a PNG strip (rows z_t / grid / x̂ per class, one column per step) and a self-contained HTML page
(images as data URIs, no network) with prev/next buttons, a slider and a class picker.

    jitmodel trajectory --ckpt runs/jit/last.pt --classes 1,3,7 --steps 10 --out strip.png --html page.html

    >>> import torch
    >>> from jitmodel.trajectory import compute_frames
    >>> frames = compute_frames(lambda z, t, y: torch.zeros_like(z), label=0, num_classes=10, img_size=8, steps=4)
    >>> [f.t for f in frames]
    [0.0, 0.25, 0.5, 0.75, 1.0]
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import torch
from torch import Tensor

from jitmodel.config import SampleConfig
from jitmodel.sample import XHatFn, make_grid, noise_for_ids, sample, to_uint8, x_hat_from_velocity

GRID_COLOR = (255, 48, 48)
VIEWS = ("z", "grid", "xhat")


@dataclass
class Frame:
    step: int
    t: float
    z: Tensor  # (C, H, W) fp32, the state z_t
    x_hat: Tensor  # (C, H, W) fp32, the prediction at t


def compute_frames(x_hat: XHatFn, *, label: int, num_classes: int, img_size: int, steps: int = 10,
                   sample_cfg: SampleConfig | None = None, in_channels: int = 3, seed: int = 0,
                   noise_scale: float = 1.0, t_eps: float = 0.05, device: str | torch.device = "cpu",
                   on_step: Callable[[], None] | None = None) -> list[Frame]:
    """Run the sampler for one image of ``label`` and keep a frame per step (steps + 1 frames); ``on_step``
    is called after each (a progress line)."""
    cfg = (sample_cfg or SampleConfig()).model_copy(update={"steps": steps})
    frames: list[Frame] = []

    def keep(i: int, t: float, z: Tensor, v: Tensor) -> None:
        frames.append(Frame(i, t, z[0].detach().cpu().clone(), x_hat_from_velocity(z, v, t, t_eps)[0].cpu()))
        if on_step is not None:
            on_step()

    z0 = noise_for_ids([0], seed, (in_channels, img_size, img_size), noise_scale, device)
    with torch.no_grad():
        final, _ = sample(x_hat, z0, torch.tensor([label], device=device), cfg, num_classes=num_classes,
                          t_eps=t_eps, on_step=keep)
    frames.append(Frame(steps, 1.0, final[0].cpu(), final[0].cpu()))  # at t = 1 the state is the image
    return frames


# --------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------
def display_scale(img_size: int, target: int = 128) -> int:
    """Integer nearest-neighbour upscale so small images are visible (32 px -> 4x)."""
    return max(1, target // img_size)


def upscale(img: Tensor, scale: int) -> Tensor:
    """uint8 (C, H, W) -> (3, H*s, W*s); grey images are repeated to RGB."""
    img = img.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    return img.expand(3, -1, -1).clone() if img.shape[0] == 1 else img


def draw_patch_grid(img: Tensor, cell: int, color: tuple[int, int, int] = GRID_COLOR) -> Tensor:
    """Lines every ``cell`` pixels (the patch size at display scale) over a uint8 (3, H, W) image."""
    out = img.clone()
    c = torch.tensor(color, dtype=torch.uint8).view(3, 1)
    for k in range(0, out.shape[1], cell):
        out[:, k, :] = c
    for k in range(0, out.shape[2], cell):
        out[:, :, k] = c
    out[:, -1, :] = c
    out[:, :, -1] = c
    return out


def render(frame: Frame, patch: int, scale: int) -> dict[str, Tensor]:
    """The three views of a frame as uint8 (3, H, W) pictures."""
    z = upscale(to_uint8(frame.z[None])[0], scale)
    return {"z": z, "grid": draw_patch_grid(z, patch * scale), "xhat": upscale(to_uint8(frame.x_hat[None])[0], scale)}


def strip(per_class: list[list[dict[str, Tensor]]]) -> Tensor:
    """(H, W, 3) picture: for each class three rows (z_t, grid, x̂), one column per step."""
    cols = len(per_class[0])
    tiles = [r[view] for rendered in per_class for view in VIEWS for r in rendered]
    return make_grid(torch.stack(tiles), ncol=cols, pad=2)


def _png_data_uri(chw: Tensor) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(chw.permute(1, 2, 0).contiguous().numpy()).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def page(per_class: list[list[dict[str, Tensor]]], frames: list[list[Frame]], names: list[str],
         title: str) -> str:
    """The self-contained HTML viewer (template ``jitmodel/trajectory.html``, data inlined as JSON)."""
    data = {
        "title": title,
        "classes": [
            {"name": name, "frames": [{"step": f.step, "t": round(f.t, 6), **{v: _png_data_uri(r[v]) for v in VIEWS}}
                                      for f, r in zip(fr, rendered, strict=True)]}
            for name, fr, rendered in zip(names, frames, per_class, strict=True)
        ],
    }
    template = resources.files("jitmodel").joinpath("trajectory.html").read_text(encoding="utf-8")
    payload = json.dumps(data).replace("</", "<\\/")  # never close the <script> early
    return template.replace("__TITLE__", _escape(title)).replace("__DATA__", payload)


def _escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


