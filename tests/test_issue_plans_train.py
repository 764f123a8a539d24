"""Issue #14's three plans start and train under torchrun on the CPU (gloo): the strategy, precision, world
size, micro-batch x accumulation and EMA interval each plan chose run as planned, and their checkpoints load.

JiT-L/16 on 2xRTX3060, JiT-H/16 on 1xRTX4090 and JiT-B/16 on 2xT4 are planned for real; the runs keep every
training choice of the plan and swap the network for JiT-Tiny/4 at 8 px on the digits. The real L/16 and H/16
need 14-23 GB of host RAM for their fixed state alone (24 B/param for weights, AdamW and the EMAs), more than a
CI box can give beside the suite; what the plan decides, not the network's width, is under test here, and the
memory of the real networks under each strategy is checked against a traced step (test_strategy_plan.py).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jitplan.hardware.spec import hardware_from_flags
from jitplan.planner.plan import make_plan
from jitplan.schemas import PlanOptions, load_recipe

PLANS = {"L16-2x3060": ("2xRTX3060", "JiT-L/16"), "H16-1x4090": ("1xRTX4090", "JiT-H/16"),
         "B16-2xT4": ("2xT4", "JiT-B/16")}
STEPS = 2
MICRO_CAP = 4  # the micro-batch is capped (CPU time); accumulation, world size and strategy are the plan's


def reduced(gpus: str, recipe: str, out: Path) -> dict:
    """The plan's TrainConfig with JiT-Tiny/4 at 8 px on the digits, 2 optimizer steps, on the CPU."""
    plan = make_plan(hardware_from_flags(gpus), load_recipe(recipe), PlanOptions())
    t = plan.train
    cfg = t.model_dump(mode="json")
    cfg.update(model={"variant": "JiT-Tiny/4", "img_size": 8, "in_channels": 1, "num_classes": 10},
               data={"kind": "digits", "num_workers": 0}, batch_per_gpu=min(t.batch_per_gpu, MICRO_CAP),
               max_steps=STEPS, log_every=1, compile=False, device="cpu", output_dir=str(out), dist_timeout_s=None,
               checkpoint={"every_steps": STEPS, "keep_last": 1}, eval={"online": False})
    cfg["optim"]["warmup_epochs"] = 0.0
    return cfg


def _drive(root: Path, names: list[str]) -> None:
    """Under torchrun: train each named plan's reduced config."""
    import torch

    from jitmodel.config import TrainConfig
    from jitmodel.dist import DistEnv, barrier, destroy_process_group
    from jitmodel.train import Trainer

    torch.set_num_threads(1)
    env = DistEnv.from_env()
    try:
        for name in names:
            cfg = json.loads((root / f"{name}.json").read_text())
            Trainer(TrainConfig.model_validate(cfg), env).fit()
            barrier()
    finally:
        destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("issue_plans")
    by_world: dict[int, list[str]] = {}
    for name, (gpus, recipe) in PLANS.items():
        cfg = reduced(gpus, recipe, root / name)
        (root / f"{name}.json").write_text(json.dumps(cfg))
        by_world.setdefault(cfg["world_size"], []).append(name)
    torchrun = shutil.which("torchrun")
    cmd = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "JITMODEL_NO_PROGRESS": "1"}
    for world, names in sorted(by_world.items()):
        r = subprocess.run([*cmd, "--standalone", "--nproc-per-node", str(world), __file__, str(root), *names],
                           env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PLANS))
def test_each_issue_plan_trains_as_planned(runs, name):
    from jitmodel import checkpoint as C

    cfg = json.loads((runs / f"{name}.json").read_text())
    out = runs / name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == STEPS and all(math.isfinite(v) for v in losses)
    ck = C.load_checkpoint(out / "last.pt")
    assert ck["step"] == STEPS and ck["world_size"] == cfg["world_size"]
    ran = ck["train_config"]
    assert ran["memory"] == cfg["memory"] and ran["precision"] == cfg["precision"]
    assert (ran["batch_per_gpu"], ran["accum_steps"]) == (cfg["batch_per_gpu"], cfg["accum_steps"])
    if cfg["precision"] == "fp16":  # the T4 plan: the gradient scaler ran and was saved
        assert ck.get("scaler") and ck["scaler"]["scale"] > 0


def test_the_issue_plans_choose_what_the_docs_show():
    """Each plan keeps a strategy: L/16 on 2xRTX3060 shards, H/16 on one 4090 moves the EMAs to the host, the
    T4 pair runs B/16 in fp16 (the test above then runs exactly those choices)."""
    got = {n: reduced(g, r, Path("unused")) for n, (g, r) in PLANS.items()}
    assert got["L16-2x3060"]["memory"]["shard"] and got["L16-2x3060"]["world_size"] == 2
    assert got["H16-1x4090"]["memory"]["ema_device"] == "cpu" and got["H16-1x4090"]["world_size"] == 1
    assert got["B16-2xT4"]["precision"] == "fp16" and got["B16-2xT4"]["world_size"] == 2
    assert all(c["accum_steps"] > 1 for c in got.values())


if __name__ == "__main__":  # under torchrun
    _drive(Path(sys.argv[1]), sys.argv[2:])
