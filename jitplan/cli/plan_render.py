"""How ``jitplan plan`` shows a Plan to people: each decision once, readable at 80 columns.

Wide terminals (>= 140 columns, or ``--wide``) get the side-by-side table quantity | reference | target |
why; narrower ones one entry per row, ``quantity: reference -> target`` with the "why" indented below. A warning
the planner raises about a
row is shown on that row (in yellow), not repeated below it; the worker reasons below the table leave out
the one the workers row already says. The launch line names the plan file only when it was written.
"""

from __future__ import annotations

import shlex

from jitplan.cli._output import print_next, whole_words
from jitplan.launch.torchrun import plan_command

WIDE_COLUMNS = 140


def _gb_gib(n: float) -> str:
    return f"{n / 1e9:.1f} GB ({n / 2**30:.1f} GiB)"


def render_plan(console, plan, *, wide: bool | None = None, saved_to: str | None = None) -> None:
    from rich import box
    from rich.markup import escape as esc
    from rich.table import Table
    from rich.text import Text

    from jitplan.planner.rows import fmt_bytes  # lazy: CLI start-up

    wide = console.width >= WIDE_COLUMNS if wide is None else wide
    hw = plan.hardware
    name = "traced model" if plan.train.model.factory else plan.train.model.variant  # its recipe names the factory
    title = f"{name}: {plan.recipe} adapted to {hw.world_size} x {hw.gpu.name} ({plan.policy})"
    whys = {r.why for r in plan.rows}
    warned = {w for w in plan.warnings if w in whys}
    if wide:
        table = Table(title=esc(title))
        for col, style in (("quantity", "bold"), ("reference", ""), ("target", "cyan"), ("why", "dim")):
            table.add_column(col, style=style, overflow="fold")
        for r in plan.rows:
            why = Text(f"warning: {r.why}", style="yellow") if r.why in warned else Text(r.why)
            table.add_row(Text(r.quantity), Text(r.reference), Text(r.target), why)
    else:  # one entry per row: "quantity: reference -> target", the why indented below at full width
        from rich.padding import Padding

        console.print(Text(title, style="bold"))
        for r in plan.rows:
            if r.quantity.startswith("  ") and r.why not in warned:  # another candidate: one line, its first clause
                first = r.why.split(";")[0]
                console.print(Text.assemble((r.quantity, "bold"), ": ", (r.target, "cyan"), (f" ({first})", "dim")))
                continue
            head = Text.assemble((r.quantity, "bold"), ": ", r.reference, " -> ", (r.target, "cyan"))
            why = (Text(f"warning: {r.why}", style="yellow") if r.why in warned else Text(r.why, style="dim"))
            console.print(head)
            console.print(Padding(why, (0, 0, 0, 4)))
        table = None
    if table is not None:
        console.print(table)

    mem = Table(title="memory per GPU (predicted)", box=None if not wide else box.HEAVY_HEAD)
    for col in ("item", "bytes", "why"):
        mem.add_column(col, overflow="fold")
    for item in plan.estimates.memory_breakdown:
        mem.add_row(Text(item.name), fmt_bytes(item.bytes), Text(item.why))
    e = plan.estimates
    mem.add_row("total", fmt_bytes(e.memory_per_gpu_bytes), f"target {fmt_bytes(e.memory_target_bytes)} of "
                f"{_gb_gib(e.gpu_memory_bytes)} ({esc(e.memory_source)})", style="bold")
    console.print(mem)

    rest = [r for r in plan.workers.reasons if r not in whys]
    if rest:
        console.print(Text("workers: " + "; ".join(rest)))
    for w in plan.warnings:
        if w not in warned:
            console.print(Text.assemble(("warning: ", "yellow"), w))
    argv = shlex.join(plan_command(plan.launch))
    # HOOK (newcomer): each command whole on lines of its own, copy-pasteable at any width (print_next)
    name = saved_to or "plan.yaml"
    if saved_to is None:
        console.print(Text("not saved: add --out plan.yaml to write this plan", style="bold"))
    print_next(console, "check it, then launch it (or --ssh / --vast):",
               [f"jitplan doctor --plan {name}", f"jitplan launch {name} --local"])
    print_next(console, "which runs on every node:", [argv], label="")


def render_catalog(console, rows, *, wide: bool | None = None) -> None:
    """The GPU catalog; below 140 columns without NVLink and the sources (``--wide`` or ``--json`` has them)."""
    from rich.table import Table
    from rich.text import Text

    wide = console.width >= WIDE_COLUMNS if wide is None else wide
    table = Table(title="GPU catalog (jitplan/hardware/catalog.yaml); GB = 10^9 bytes, GiB = 2^30")
    cols = ("name", "memory", "bf16 TFLOPS", "fp32 TFLOPS", "GB/s", "CC", "NVLink", "class", "source")
    for col in cols if wide else cols[:6] + ("class",):
        table.add_column(col, overflow="fold")
    for g in rows:
        cells = [Text(g.name), _gb_gib(g.memory_bytes), f"{g.bf16_tflops:g}", f"{g.fp32_tflops or 0:g}",
                 f"{g.mem_bw_gbs or 0:g}", g.compute_capability or "-"]
        cells += ["yes" if g.nvlink else "no", g.gpu_class, Text(g.source)] if wide else [g.gpu_class]
        table.add_row(*cells)
    console.print(whole_words(table, console.width))  # no word folded at 80 columns ("workstatio" / "n")
    if not wide:
        console.print(Text("NVLink and each number's source: --wide or --json", style="dim"))


def render_inference(console, plan, *, wide: bool | None = None) -> None:
    """A sampling/evaluation plan: the same rows layout as a training plan, both memory breakdowns, the command."""
    from rich.markup import escape as esc
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    from jitplan.planner.rows import fmt_bytes, fmt_duration  # lazy: CLI start-up

    wide = console.width >= WIDE_COLUMNS if wide is None else wide
    t = plan.target
    title = (f"{plan.variant} at {plan.img_size} px: {plan.task} {plan.num_images:,} images on {t.gpus} "
             f"(reference {plan.reference.gpus})")
    if wide:
        table = Table(title=esc(title))
        for col, style in (("quantity", "bold"), ("reference", ""), ("target", "cyan"), ("why", "dim")):
            table.add_column(col, style=style, overflow="fold")
        for r in plan.rows:
            table.add_row(Text(r.quantity), Text(r.reference), Text(r.target), Text(r.why))
        console.print(table)
    else:
        console.print(Text(title, style="bold"))
        for r in plan.rows:
            console.print(Text.assemble((r.quantity, "bold"), ": ", r.reference, " -> ", (r.target, "cyan")))
            console.print(Padding(Text(r.why, style="dim"), (0, 0, 0, 4)))
    mem = Table(title=f"memory on {t.gpus.split(' x ', 1)[-1]} at batch {t.batch} (predicted)", box=None)
    for col in ("item", "bytes", "why"):
        mem.add_column(col, overflow="fold")
    for item in t.memory_breakdown:
        mem.add_row(Text(item.name), fmt_bytes(item.bytes), Text(item.why))
    mem.add_row("total", fmt_bytes(t.memory_bytes), f"target {fmt_bytes(t.memory_target_bytes)} of "
                f"{fmt_bytes(t.usable_memory_bytes)} usable; largest batch that fits: {t.max_batch}", style="bold")
    console.print(mem)
    for w in plan.warnings:
        console.print(Text.assemble(("warning: ", "yellow"), w))
    console.print(Text(f"run ({fmt_duration(t.total_s)} predicted):", style="bold"))
    console.print(Text(f"  {shlex.join(plan.command)}"))
