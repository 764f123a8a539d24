"""Render a Report as one self-contained HTML page: inline CSS, inline SVG charts, images as data URIs.

No script, no network: the page opens from a file anywhere (and in a headless browser in the tests).
"""

from __future__ import annotations

import html
import time

from jitplan.report.build import Report

W, H, PAD = 560, 200, 40
CSS = """body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}
.flag{background:#fde2e1;font-weight:bold}.charts{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0}figcaption{font-size:12px;color:#555}img{image-rendering:pixelated;max-width:256px}
.muted{color:#777}"""


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    return f"{v:,.3f} {unit}" if abs(v) < 100 else f"{v:,.0f} {unit}"


def chart(title: str, pts: list[tuple[float, float]], planned: float | None = None) -> str:
    """A polyline with min/max labels (SVG), and the plan's value as a dashed line when there is one."""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts] + ([planned] if planned is not None else [])
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    sx = lambda x: PAD + (x - x0) / (x1 - x0) * (W - 2 * PAD)  # noqa: E731
    sy = lambda y: H - PAD + (y - y0) / (y1 - y0) * -(H - 2 * PAD)  # noqa: E731
    line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
    t = html.escape(title)
    plan = (f'<line class="planned" x1="{PAD}" x2="{W - PAD}" y1="{sy(planned):.1f}" y2="{sy(planned):.1f}" '
            f'stroke="#e65100" stroke-dasharray="6 4"/><text x="{W - PAD - 90}" y="{sy(planned) - 4:.1f}" '
            f'font-size="11" fill="#e65100">planned {planned:.4g}</text>' if planned is not None else "")
    return (f'<figure><svg class="chart" role="img" aria-label="{t}" width="{W}" height="{H}" '
            f'xmlns="http://www.w3.org/2000/svg"><rect width="{W}" height="{H}" fill="#fafafa"/>'
            f'<polyline fill="none" stroke="#2962ff" stroke-width="1.5" points="{line}"/>{plan}'
            f'<text x="4" y="{PAD - 4}" font-size="11">{y1:.4g}</text>'
            f'<text x="4" y="{H - PAD + 12}" font-size="11">{y0:.4g}</text>'
            f'<text x="{PAD}" y="{H - 6}" font-size="11">step {x0:.0f}</text>'
            f'<text x="{W - PAD - 60}" y="{H - 6}" font-size="11">step {x1:.0f}</text></svg>'
            f"<figcaption>{t}</figcaption></figure>")


def render(rep: Report) -> str:
    e = html.escape
    rows = []
    for c in rep.compared:
        drift = "-" if c.drift is None else f"{c.drift:+.0%}"
        cls = ' class="flag"' if c.flagged else ""
        rows.append(f"<tr{cls}><td>{e(c.quantity)}</td><td>{_fmt(c.planned, c.unit)}</td>"
                    f"<td>{_fmt(c.measured, c.unit)}</td><td>{drift}</td></tr>")
    flagged = [c.quantity for c in rep.compared if c.flagged]
    fold = (f"<code>jitplan calibrate {e(rep.run_id or '')}</code> folds this run into later plans" if rep.on_gpu
            else "it ran on the CPU, so it cannot calibrate a GPU plan")
    if not rep.has_plan:
        verdict = '<p class="muted">no plan to compare with (the run has no plan file)</p>'
    elif flagged:
        verdict = f'<p class="flag">drift beyond 15%: {e(", ".join(flagged))}; {fold}</p>'
    else:
        verdict = "<p>within 15% of the plan where both are known</p>"
    charts = "".join(chart(k, v, rep.planned_lines.get(k)) for k, v in rep.series.items() if len(v) >= 1) or \
        '<p class="muted">no records</p>'
    events = "".join(f"<tr><td>{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(ev.ts))}</td><td>{e(ev.kind)}</td>"
                     f"<td style='text-align:left'>{e(ev.message)}</td></tr>" for ev in rep.events)
    imgs = "".join(f'<figure><img src="{i.data_uri}" alt="{e(i.name)}"><figcaption>{e(i.name)}</figcaption></figure>'
                   for i in rep.images)
    pages = "".join(f"<li>{e(p)}</li>" for p in rep.trajectory_pages)
    head = f"{e(rep.name)}" + (f" ({e(rep.run_id)})" if rep.run_id else "")
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>jitplan report: {head}</title>
<style>{CSS}</style></head><body>
<h1>Run {head}</h1>
<p>status {e(rep.status or "-")} · {e(rep.gpu or "no plan")} · plan {e(rep.plan_path or "-")} ·
time model: {e(rep.time_source or "-")}</p>
<h2>Plan vs measured</h2>
<table id="compared"><tr><th>quantity</th><th>planned</th><th>measured</th><th>drift</th></tr>{"".join(rows)}</table>
{verdict}
{f'<h2>Re-planned on this machine</h2><pre id="replan">{e(chr(10).join(rep.replan))}</pre>' if rep.replan else ""}
<h2>Over time</h2><div class="charts">{charts}</div>
<h2>Events</h2>{f'<table id="events"><tr><th>when (UTC)</th><th>kind</th><th>message</th></tr>{events}</table>'
                if events else '<p class="muted">no events recorded</p>'}
<h2>Samples</h2>{f'<div class="charts">{imgs}</div>' if imgs else '<p class="muted">no sample images</p>'
                 if not rep.images_skipped else ""}
{f'<p class="muted">not inlined (over 2 MB or past 8): {e(", ".join(rep.images_skipped))}</p>'
 if rep.images_skipped else ""}
{f"<h2>Trajectory pages</h2><ul>{pages}</ul>" if pages else ""}
</body></html>
"""
