"""Render a traced plan (``jitplan plan --model`` / a family recipe): reference beside target, the memory
breakdown, the step's terms and the strategies tried."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _gb(b: float) -> str:
    return f"{b / 1e9:.1f} GB ({b / 2**30:.1f} GiB)"


def render_latents(console: Console, lat: Any) -> None:
    """The dataset's encoding for a latent model (``jitplan.planner.latent.LatentPlan``): once, its time and disk."""
    c, h, w = lat.latent_shape
    t = Table(title="latents: encode the dataset once (jitplan data encode)", show_header=False)
    t.add_row("images", f"{lat.images:,} at {lat.image_size} px -> {c}x{h}x{w} x {lat.views} view(s) {lat.dtype}")
    rate = lat.images / lat.encode_s
    t.add_row("encode time", f"{lat.encode_s / 3600:.1f} h on one {lat.gpu} ({rate:,.0f} images/s, {lat.bound}-bound)")
    free = f" of {lat.disk_free_bytes / 1e9:,.1f} GB free" if lat.disk_free_bytes is not None else ""
    t.add_row("disk", f"{lat.disk_bytes / 1e9:,.2f} GB{free}")
    console.print(t)
    for n in lat.notes:
        console.print(f"  {n}")
    if lat.disk_free_bytes is not None and lat.disk_bytes > lat.disk_free_bytes:
        console.print(f"[yellow]warning:[/yellow] the latents ({lat.disk_bytes / 1e9:,.1f} GB) do not fit the "
                      f"{lat.disk_free_bytes / 1e9:,.1f} GB free")


def render_traced(console: Console, tp: Any, ref: Any = None, rec: Any = None, latent: Any = None) -> None:
    title = rec.name if rec is not None else tp.model
    console.print(f"[bold]{title}[/bold]: {tp.params / 1e6:.1f}M params, "
                  f"{tp.train_flops_per_image / 1e9:.1f} GFLOP per image (forward + backward), {tp.trace}")
    t = Table(show_header=True, header_style="bold")
    t.add_column("quantity")
    if ref is not None:
        t.add_column(f"reference ({ref.world_size} x {ref.gpu})")
    t.add_column(f"target ({tp.world_size} x {tp.gpu})")
    rows = [
        ("memory strategy", lambda p: p.strategy),
        ("precision", lambda p: p.precision),
        ("micro-batch x accum x GPUs", lambda p: f"{p.micro_batch} x {p.accum_steps} x {p.world_size} = "
                                                  f"{p.effective_batch}"),
        ("largest micro-batch that fits", lambda p: str(p.max_micro_batch)),
        ("memory per GPU", lambda p: f"{_gb(p.memory_per_gpu_bytes)} of {_gb(p.gpu_memory_bytes)}"),
        ("step time (prior)", lambda p: f"{p.step_time_s:.3f} s"),
        ("images / s", lambda p: f"{p.images_per_s:,.0f}"),
    ]
    if rec is not None:
        steps = rec.reference.steps
        rows.append((f"{steps:,} steps of batch {rec.reference.batch}",
                     lambda p: f"{steps * rec.reference.batch / p.images_per_s / 86400:.1f} days"))
    for name, get in rows:
        t.add_row(name, *([get(ref)] if ref is not None else []), get(tp))
    console.print(t)
    for title, head, parts, fmt in (("memory per GPU (target)", ("item", "GB", "why"), tp.memory_breakdown,
                                     lambda v: f"{v / 1e9:+.2f}"),
                                    ("step time (target)", ("term", "s", "why"), tp.step_breakdown,
                                     lambda v: f"{v:.4f}")):
        b = Table(title=title, show_header=True, header_style="bold")
        for c in head:
            b.add_column(c)
        for part in parts:
            b.add_row(part.name, fmt(part.value), part.why)
        console.print(b)
    st = Table(title="memory strategies", show_header=True, header_style="bold")
    for col in ("strategy", "fits", "micro x accum", "memory", "images/s"):
        st.add_column(col)
    for cand in tp.candidates:
        st.add_row(cand.strategy, "yes" if cand.fits else "no",
                  f"{cand.micro_batch} x {cand.accum_steps}" if cand.fits else "-",
                  _gb(cand.memory_bytes) if cand.fits else "-", f"{cand.images_per_s:,.0f}" if cand.fits else "-")
    console.print(st)
    if rec is not None:
        r = rec.reference
        console.print(f"reference run: {r.hardware}, batch {r.batch}, lr {r.lr:g}, {r.steps:,} steps "
                      f"({r.source}){'; ' + r.hardware_note if r.hardware_note else ''}")
    if latent is not None:
        render_latents(console, latent)
    for w in tp.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
