"""loss.png: training curves and the common v-loss against t (matplotlib, or PIL when it is missing)."""

from __future__ import annotations

import math
from pathlib import Path

from jitmodel.atomic import atomic_write
from jitplan.compare.results import CompareResult, _f, models_vary


def plot_losses(r: CompareResult, path: Path) -> Path:
    """Two panels: training loss vs step (own spaces) and the common v-space loss vs t; matplotlib if
    installed, else a plain PIL drawing of the same curves."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _plot_pil(r, path)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for a in r.arms:
        if a.loss_curve:
            s, v = zip(*a.loss_curve, strict=True)
            ax1.plot(s, v, label=f"{a.arm} ({a.loss_space}-space)")
        if a.v_loss_by_t:
            t, v = zip(*a.v_loss_by_t, strict=True)
            ax2.plot(t, v, marker="o", ms=3, label=f"{a.arm} (mean {_f(a.v_loss_common, '.3g')})")
    ax1.set(xlabel="optimizer step", ylabel="training loss (own space)", yscale="log",
            title="training loss (not comparable across spaces)")
    ax2.set(xlabel="t (0 noise, 1 clean)", ylabel="v-space loss", yscale="log",
            title="common metric: v-loss on a fixed batch")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    nets = " vs ".join(dict.fromkeys(str(a.model) for a in r.arms)) if models_vary(r) else r.variant
    fig.suptitle(f"{nets} {r.img_size}px, {r.data}, {r.budget.describe()}", fontsize=10)
    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, dpi=110, format="png"))
    finally:
        plt.close(fig)
    return path


_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def _plot_pil(r: CompareResult, path: Path) -> Path:
    from PIL import Image, ImageDraw

    w, h, pad = 900, 360, 50
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    loss: list[list[tuple[float, float]]] = [[(float(a), b) for a, b in arm.loss_curve] for arm in r.arms]
    by_t: list[list[tuple[float, float]]] = [list(arm.v_loss_by_t) for arm in r.arms]
    panels = [((pad, 30, w // 2 - 20, h - pad), loss, "training loss (own space) vs step"),
              ((w // 2 + pad, 30, w - 20, h - pad), by_t, "common v-loss vs t")]
    for (x0, y0, x1, y1), curves, title in panels:
        draw.rectangle((x0, y0, x1, y1), outline="black")
        draw.text((x0, y0 - 18), title + " (log y)", fill="black")
        pts = [(float(a), float(b)) for c in curves for a, b in c if b is not None and b > 0]
        if not pts:
            continue
        xs, ys = [p[0] for p in pts], [math.log10(p[1]) for p in pts]
        xlo, xhi, ylo, yhi = min(xs), max(xs), min(ys), max(ys)
        draw.text((x0, y1 + 4), f"{xlo:g}", fill="black")
        draw.text((x1 - 40, y1 + 4), f"{xhi:g}", fill="black")
        draw.text((x0 - 45, y0), f"{10 ** yhi:.3g}", fill="black")
        draw.text((x0 - 45, y1 - 10), f"{10 ** ylo:.3g}", fill="black")
        for k, c in enumerate(curves):
            line = [(x0 + (a - xlo) / ((xhi - xlo) or 1) * (x1 - x0),
                     y1 - (math.log10(b) - ylo) / ((yhi - ylo) or 1) * (y1 - y0)) for a, b in c if b and b > 0]
            if len(line) > 1:
                draw.line(line, fill=_COLORS[k % len(_COLORS)], width=2)
    for k, a in enumerate(r.arms):
        draw.text((pad + 110 * k, h - 18), a.arm, fill=_COLORS[k % len(_COLORS)])
    atomic_write(path, lambda f: img.save(f, format="PNG"))
    return path
