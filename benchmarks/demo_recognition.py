"""How many of the demo's samples does the independent classifier recognise, after how many steps?

Trains the demo's exact TrainConfig (``jitplan.demo.demo_config``: JiT-Tiny/4 on the digits, EMA decays
0.995/0.999, with or without the EMA warm-up) once to ``--steps``, keeping a checkpoint every ``--every``
steps, then samples the demo's grid (``jitmodel sample``, 4 per digit, its cfg 2.0 / Heun-20 defaults) from
each checkpoint and scores it with ``jitplan.demo.recognise``. Prints one row per checkpoint.

    python benchmarks/demo_recognition.py --steps 1400 --every 200
    python benchmarks/demo_recognition.py --steps 400 --every 100 --no-warmup   # the old EMA, for contrast
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1400)
    p.add_argument("--every", type=int, default=200)
    p.add_argument("--per-digit", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="OMP threads of the trainer and the sampler")
    p.add_argument("--no-warmup", action="store_true", help="EMA without warm-up (before issue #15)")
    p.add_argument("--ema", default="ema1")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()

    from jitmodel.config import dump_yaml
    from jitplan.demo import demo_config, recognise
    from jitplan.hardware.probe import run_probe

    hw = run_probe().to_hardware_spec()
    cfg, _ = demo_config(hw, steps=a.steps)
    diff = cfg.diffusion.model_copy(update={"ema_warmup": not a.no_warmup})
    ck = cfg.checkpoint.model_copy(update={"every_steps": a.every, "keep_last": 1000})
    out = a.out or Path(tempfile.mkdtemp(prefix="demo-recognition-"))
    cfg = cfg.model_copy(update={"diffusion": diff, "checkpoint": ck, "output_dir": str(out / "out")})
    (out).mkdir(parents=True, exist_ok=True)
    (out / "train.yaml").write_text(dump_yaml(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "JITMODEL_NO_PROGRESS": "1"}
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "jitmodel.train", "--config", str(out / "train.yaml")], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    train_s = time.monotonic() - t0
    load = os.getloadavg()
    print(f"trained {a.steps} steps in {train_s:.0f} s ({a.steps / train_s:.1f} steps/s, load {load[0]:.1f}); "
          f"EMA warm-up {'off' if a.no_warmup else 'on'}; weights {a.ema}; {a.per_digit} samples per digit")
    labels = [d for d in range(10) for _ in range(a.per_digit)]
    rows = []
    for ckpt in sorted((out / "out" / "ckpt").glob("[0-9]*.pt")):
        pics = out / f"pics-{ckpt.stem}"
        subprocess.run([sys.executable, "-m", "jitmodel", "sample", "--ckpt", str(ckpt), "--classes",
                        ",".join(map(str, range(10))), "--n", str(a.per_digit), "--device", "cpu", "--ema", a.ema,
                        "--out", str(pics / "grid.png"), "--out-dir", str(pics)], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        ok, pred, held_out = recognise(sorted(pics.glob("0*.png")), labels)
        rows.append({"step": int(ckpt.stem), "recognised": ok, "of": len(labels)})
        print(f"step {int(ckpt.stem):>5}: {ok:>3} of {len(labels)} recognised ({ok / len(labels):.0%}); "
              f"classifier held-out accuracy on real scans {held_out:.3f}", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
