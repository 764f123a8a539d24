"""Training throughput of the real trainer: img/s for the tiny config, exact vs sdpa attention, compile on/off.

Each case is a separate ``python -m jitmodel.train`` process (a fresh torch, fresh compile caches) on the
digits at the given size; img/s is the median of the logged windows after the first (the first window
holds start-up and, with compile, the compilation). On a GPU it also runs JiT-B/16 at 256 px on random
images (``--gpu-b16``): step time and peak memory.

    python benchmarks/bench_train.py                        # CPU: JiT-Tiny/4 at 32 px, batch 32
    python benchmarks/bench_train.py --threads 1 --steps 60
    python benchmarks/bench_train.py --gpu-b16 --batch 128  # on a CUDA machine
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def run_case(work: Path, *, variant: str, img_size: int, batch: int, steps: int, attention: str, compile_: bool,
             precision: str, threads: int | None, data: dict, device: str = "auto",
             log_every: int = 10) -> dict:
    name = f"{variant.replace('/', '-')}-{img_size}-{attention}-{'compile' if compile_ else 'eager'}-{precision}"
    out = work / name
    cfg = {
        "model": {"variant": variant, "img_size": img_size, "num_classes": 1000 if data["kind"] != "digits" else 10,
                  "attention": attention},
        "data": data, "batch_per_gpu": batch, "max_steps": steps, "epochs": 10_000, "log_every": log_every,
        "compile": compile_, "precision": precision, "device": device, "output_dir": str(out),
        "checkpoint": {"every_epochs": 10_000},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "c.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "JITMODEL_NO_PROGRESS": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "jitmodel.train", "--config", str(out / "c.yaml")], env=env,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        return {"case": name, "error": (r.stderr.strip().splitlines() or ["?"])[-1]}
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    win = [x for x in recs if "img_per_s" in x]
    steady = [x["img_per_s"] for x in win[1:]] or [win[0]["img_per_s"]]
    return {"case": name, "img_per_s": statistics.median(steady), "first_window_img_per_s": win[0]["img_per_s"],
            "peak_mem_mib": win[-1]["peak_mem_mib"], "mem_kind": win[-1]["mem_kind"],
            "step_ms": 1000 * batch / statistics.median(steady), "wall_s": round(wall, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the runs (default: torch's)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile cases")
    p.add_argument("--gpu-b16", action="store_true", help="JiT-B/16 at 256 px on random images (CUDA)")
    p.add_argument("--work", default=None)
    a = p.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="bench-train-"))
    rows = []
    if a.gpu_b16:
        from PIL import Image

        root = work / "randimg"
        if not root.exists():
            import numpy as np

            rng = np.random.default_rng(0)
            for c in range(8):
                (root / "train" / f"c{c}").mkdir(parents=True)
                for i in range(160):
                    Image.fromarray(rng.integers(0, 256, (288, 320, 3), dtype=np.uint8)).save(
                        root / "train" / f"c{c}" / f"{i}.png")
        data = {"path": str(root), "num_workers": 8}
        for attention in ("exact", "sdpa"):
            rows.append(run_case(work, variant="JiT-B/16", img_size=256, batch=a.batch, steps=a.steps,
                                 attention=attention, compile_=False, precision="auto", threads=None, data=data,
                                 device="cuda"))
            print(json.dumps(rows[-1]), flush=True)
    else:
        data = {"kind": "digits", "num_workers": 0}
        for compile_ in ((False,) if a.no_compile else (False, True)):
            for attention in ("exact", "sdpa"):
                rows.append(run_case(work, variant="JiT-Tiny/4", img_size=a.img_size, batch=a.batch, steps=a.steps,
                                     attention=attention, compile_=compile_, precision="fp32", threads=a.threads,
                                     data=data))
                print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'case':<44} {'img/s':>8} {'step ms':>8} {'peak MiB':>9} {'wall s':>7}")
    for r in rows:
        if "error" in r:
            print(f"{r['case']:<44} error: {r['error']}")
        else:
            print(f"{r['case']:<44} {r['img_per_s']:>8.1f} {r['step_ms']:>8.1f} {r['peak_mem_mib']:>9.0f} "
                  f"{r['wall_s']:>7.1f}")


if __name__ == "__main__":
    main()
