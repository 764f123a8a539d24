"""The issue's plans start and train under torchrun on the CPU (gloo) at a reduced size.

For each of ``jitplan plan --gpus 2xRTX3060 --recipe JiT-L/16``, ``--gpus 1xRTX4090 --recipe JiT-H/16`` and
``--gpus 2xT4`` (B/16): make the plan, keep what it chose (memory strategy, precision, accumulation, world
size), shrink what a CPU cannot hold (image size 32 px, micro-batch 2, the digits data, 3 optimizer steps;
L/16 and H/16 become JiT-Tiny/4 because their fp32 state alone is 13.8 / 28.6 GB per rank, more than this
box's RAM for two ranks; B/16 keeps its real size), run ``torchrun --nproc-per-node <world> -m
jitmodel.train`` and print one line per plan.

    PYTHONPATH=$PWD python benchmarks/strategy_plans_cpu.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

CASES = [("2xRTX3060", "JiT-L/16", "JiT-Tiny/4"), ("1xRTX4090", "JiT-H/16", "JiT-Tiny/4"), ("2xT4", "JiT-B/16", None)]


def main() -> int:
    from jitplan.hardware.spec import hardware_from_flags
    from jitplan.planner.plan import make_plan
    from jitplan.planner.strategy import name_of
    from jitplan.schemas import PlanOptions, load_recipe

    torchrun = shutil.which("torchrun")
    cmd = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "JITMODEL_NO_PROGRESS": "1"}
    bad = 0
    for gpus, recipe, small in CASES:
        plan = make_plan(hardware_from_flags(gpus), load_recipe(recipe), PlanOptions())
        t = plan.train
        world = plan.hardware.world_size
        cfg = t.model_dump(mode="json")
        cfg["model"].update(variant=small or t.model.variant, img_size=32, num_classes=10)
        cfg["data"] = {"kind": "digits", "num_workers": 0}
        cfg["eval"] = {"online": False}
        cfg.update(batch_per_gpu=2, accum_steps=min(t.accum_steps, 2), max_steps=3, log_every=1, compile=False,
                   device="cpu", dist_timeout_s=None)
        with tempfile.TemporaryDirectory() as d:
            cfg["output_dir"] = str(Path(d) / "out")
            (Path(d) / "c.yaml").write_text(yaml.safe_dump(cfg))
            t0 = time.perf_counter()
            r = subprocess.run([*cmd, "--standalone", "--nproc-per-node", str(world), "-m", "jitmodel.train",
                                "--config", str(Path(d) / "c.yaml")], env=env, capture_output=True, text=True)
            dt = time.perf_counter() - t0
            recs = [json.loads(x) for x in (Path(d) / "out" / "metrics.jsonl").read_text().splitlines()] \
                if (Path(d) / "out" / "metrics.jsonl").exists() else []
        losses = [round(x["loss"], 3) for x in recs if "loss" in x]
        ok = r.returncode == 0 and len(losses) == 3
        bad += not ok
        print(f"{gpus} {recipe}: strategy {name_of(t.memory)} ({t.memory.model_dump()}), precision {t.precision}, "
              f"world {world}, run as {cfg['model']['variant']} @32px: rc {r.returncode}, losses {losses}, {dt:.0f} s")
        if not ok:
            print(r.stderr[-1500:])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
