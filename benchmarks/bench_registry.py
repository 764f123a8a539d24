"""Run registry and Vast provider costs: SQLite write throughput and latency (one writer, several processes at
once), `jitplan runs` with many rows, and what importing the vastai SDK costs next to the CLI.

    python benchmarks/bench_registry.py                 # prints a table; numbers go to benchmarks/RESULTS.md
    python benchmarks/bench_registry.py --writes 500 --procs 4
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jitplan.runs.registry import Registry  # noqa: E402


def _writer(path: str, n: int, q) -> None:
    reg = Registry(Path(path))
    lat = []
    for i in range(n):
        t = time.perf_counter()
        rid = reg.create_run(f"bench-{i}", "local")
        lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        reg.add_event(rid, "step", f"step {i}", i=i)
        lat.append(time.perf_counter() - t)
    q.put(lat)


def writes(path: Path, n: int, procs: int) -> tuple[float, float, float]:
    """(writes/s over all processes, median ms, max ms) for ``procs`` processes each doing 2n writes."""
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    ps = [ctx.Process(target=_writer, args=(str(path), n, q)) for _ in range(procs)]
    t0 = time.perf_counter()
    for p in ps:
        p.start()
    lat = [x for _ in ps for x in q.get()]
    for p in ps:
        p.join()
    wall = time.perf_counter() - t0
    return len(lat) / wall, statistics.median(lat) * 1e3, max(lat) * 1e3


def cli_ms(args: list[str], env: dict[str, str], reps: int = 5) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "jitplan", *args], env=env, capture_output=True, check=True)
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def import_ms(stmt: str, reps: int = 5) -> tuple[float, int]:
    best, mods = float("inf"), 0
    code = f"import sys, time; t=time.perf_counter(); {stmt}; print(time.perf_counter()-t, len(sys.modules))"
    for _ in range(reps):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        if float(out[0]) < best:
            best, mods = float(out[0]), int(out[1])
    return best * 1e3, mods


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writes", type=int, default=300, help="runs (each + 1 event) per process")
    ap.add_argument("--procs", type=int, default=4)
    a = ap.parse_args()
    import os

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "runs.db"
        Registry(path)
        r1 = writes(path, a.writes, 1)
        rn = writes(Path(d) / "runs2.db", a.writes, a.procs) if Registry(Path(d) / "runs2.db") else None
        env = {**os.environ, "JITPLAN_HOME": d}
        # the first file now holds `writes` runs; the default registry file is runs.db in JITPLAN_HOME
        n_runs = len(Registry(path).list_runs())
        t_runs = cli_ms(["runs", "--limit", "20"], env)
        t_runs_json = cli_ms(["runs", "--json", "--limit", "1000"], env)
        t_help = cli_ms(["--help"], env)
    t_vast, m_vast = import_ms("import vastai")
    t_cli, m_cli = import_ms("import jitplan.cli")
    t_prov, m_prov = import_ms("import jitplan.cloud.provision")
    print(f"{'measure':58s} value")
    print(f"{'registry, 1 process: writes/s (median / max ms)':58s} {r1[0]:.0f} ({r1[1]:.2f} / {r1[2]:.1f})")
    print(f"{f'registry, {a.procs} processes at once: writes/s (median / max ms)':58s} "
          f"{rn[0]:.0f} ({rn[1]:.2f} / {rn[2]:.1f})")
    print(f"{f'jitplan runs (registry of {n_runs} runs), wall ms':58s} {t_runs:.0f}")
    print(f"{'jitplan runs --json --limit 1000, wall ms':58s} {t_runs_json:.0f}")
    print(f"{'jitplan --help, wall ms':58s} {t_help:.0f}")
    print(f"{'import jitplan.cli: ms, modules':58s} {t_cli:.0f}, {m_cli}")
    print(f"{'import jitplan.cloud.provision (no SDK): ms, modules':58s} {t_prov:.0f}, {m_prov}")
    print(f"{'import vastai: ms, modules':58s} {t_vast:.0f}, {m_vast}")


if __name__ == "__main__":
    main()
