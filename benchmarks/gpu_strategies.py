"""One command on a CUDA machine: train with each memory strategy, print the planner's prediction beside it.

For each variant and strategy the real trainer runs under torchrun (``python -m jitmodel.run ... -m
jitmodel.train``): plain DDP and activation checkpointing on one GPU; FSDP2 sharding, alone and with
checkpointing, on every GPU of the machine (it needs two or more: NCCL cannot put two ranks on one device,
so on a one-GPU machine the sharded cases are listed as skipped). The data is scikit-learn's digits scaled
to ``--img-size`` (no dataset needed; one input channel and ten classes, which the predictions use too).
Each run trains ``2 x --steps`` optimizer steps and logs a window every ``--steps``: the second window
(after compilation and the allocator's warm-up) is the measurement: seconds per step, torch's peak allocated
and reserved memory, NVML's used memory. Predicted: jitplan's strategy memory model and step time
(priors, the machine's catalog GPU). Results go to ``--out`` (JSON) and a table on stdout; paste it into
benchmarks/RESULTS.md with the card's name.

    python benchmarks/gpu_strategies.py                               # B/16 at 256 px, batch 16
    python benchmarks/gpu_strategies.py --variants JiT-B/16,JiT-L/16 --batch 8 --no-compile
    python benchmarks/gpu_strategies.py --dry-run --gpu RTX3060 --gpus 2   # the cases and predictions only
    python benchmarks/gpu_strategies.py --device cpu --gpu RTX3060 --gpus 2 --variants JiT-Tiny/4 --img-size 8
                                                                      # the whole path on a CPU (tests)

Exit codes: 0 measured (or dry run); 1 a run failed; 2 bad arguments or no CUDA device.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

CASES = (("none", False), ("ckpt", False), ("shard", True), ("shard+ckpt", True))  # (strategy, needs 2+ GPUs)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="JiT-B/16")
    ap.add_argument("--img-size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16, help="micro-batch per GPU (no accumulation)")
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps per logged window (two windows)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--attention", choices=("exact", "sdpa"), default="exact")
    ap.add_argument("--out", default="gpu_strategies.json")
    ap.add_argument("--dry-run", action="store_true", help="the cases and predictions only: no GPU needed")
    ap.add_argument("--gpu", help="with --dry-run: the catalog GPU to predict for")
    ap.add_argument("--gpus", type=int, help="with --dry-run: how many GPUs the machine has")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="cpu: a smoke test of the whole path on this CPU (gloo, fp32; predictions for --gpu)")
    a = ap.parse_args(argv)
    from jitmodel.variants import get_variant

    try:
        a.variant_list = [get_variant(v.strip()).name for v in a.variants.split(",")]
    except KeyError as e:
        ap.error(f"--variants: {e}")
    if a.batch < 1 or a.steps < 1:
        ap.error("--batch and --steps must be >= 1")
    return a


def train_config(variant: str, name: str, world: int, a: argparse.Namespace, out: Path):  # type: ignore[no-untyped-def]
    from jitmodel.config import TrainConfig
    from jitplan.planner import strategy

    return TrainConfig.model_validate({
        "model": {"variant": variant, "img_size": a.img_size, "in_channels": 1, "num_classes": 10,
                  "attention": a.attention},
        "data": {"kind": "digits", "num_workers": 2},
        "batch_per_gpu": a.batch, "accum_steps": 1, "world_size": world, "max_steps": 2 * a.steps,
        "log_every": a.steps, "compile": a.compile and a.device == "cuda",
        "precision": "bf16" if a.device == "cuda" else "fp32", "device": a.device,
        "memory": strategy.parse(name).model_dump(), "optim": {"warmup_epochs": 0.0},
        "checkpoint": {"every_steps": 10 * a.steps, "keep_last": 1}, "eval": {"online": False},
        "output_dir": str(out),
    })


def predicted(train, gpus: str) -> dict:  # type: ignore[no-untyped-def]
    """The planner's peak memory (tensor bytes and as nvidia-smi shows it) and step time for ``train``."""
    from jitplan.hardware.spec import hardware_from_flags
    from jitplan.planner import strategy
    from jitplan.planner.plan import memory_inputs, plain_step

    hw = hardware_from_flags(gpus)
    inp = memory_inputs(train, train.world_size, nvlink=hw.gpu.nvlink)
    mem = strategy.predict(inp, train.memory, train.batch_per_gpu)
    plain, _ = plain_step(hw, train)
    cost = strategy.step_cost(inp, train.memory, plain, accum=train.accum_steps)
    return {"tensor_peak_mib": mem.tensor_peak / 2**20, "used_mib": mem.total / 2**20,
            "step_s": plain.total_s + cost.extra_s}


def measured(out: Path) -> dict:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = [r for r in rows if "step_s" in r][-1]
    return {"step_s": last["step_s"], "peak_allocated_mib": last.get("peak_allocated_mib"),
            "peak_reserved_mib": last.get("peak_reserved_mib"), "nvml_used_mib": last.get("nvml_used_mib")}


def machine(a: argparse.Namespace) -> tuple[str, int]:
    """(catalog GPU name, GPU count) of this machine, or of --gpu/--gpus in a dry run."""
    from jitplan.hardware.catalog import lookup

    if a.dry_run or a.device == "cpu":
        if not a.gpu:
            print("gpu_strategies: --dry-run and --device cpu need --gpu (a catalog name such as RTX3060)",
                  file=sys.stderr)
            raise SystemExit(2)
        try:
            return lookup(a.gpu).name, a.gpus or 1
        except KeyError as e:
            print(f"gpu_strategies: --gpu: {e.args[0]}", file=sys.stderr)
            raise SystemExit(2) from None
    import torch

    if not torch.cuda.is_available():
        print("gpu_strategies: no CUDA device (use --dry-run --gpu NAME for predictions)", file=sys.stderr)
        raise SystemExit(2)
    return lookup(torch.cuda.get_device_name(0)).name, torch.cuda.device_count()


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    gpu, count = machine(a)
    results, failed = [], 0
    work = Path(tempfile.mkdtemp(prefix="gpu_strategies-"))
    for variant in a.variant_list:
        for name, needs_two in CASES:
            world = count if needs_two else 1
            row = {"variant": variant, "strategy": name, "gpus": world, "batch": a.batch, "img_size": a.img_size,
                   "compile": a.compile, "attention": a.attention, "gpu": gpu}
            if needs_two and count < 2:
                results.append({**row, "skipped": "sharding needs 2+ GPUs (NCCL: one rank per device)"})
                continue
            out = work / f"{variant.replace('/', '-')}-{name}"
            train = train_config(variant, name, world, a, out)
            row["predicted"] = predicted(train, f"{world}x{gpu}")
            if not a.dry_run:
                cfg = work / f"{out.name}.json"
                cfg.write_text(json.dumps(train.model_dump(mode="json")))
                cmd = [sys.executable, "-m", "jitmodel.run", "--standalone", f"--nproc-per-node={world}",
                       "-m", "jitmodel.train", "--config", str(cfg)]
                env = {**os.environ, "JITMODEL_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
                r = subprocess.run(cmd, cwd=ROOT, env=env,
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    failed += 1
                    row["error"] = (r.stderr or r.stdout)[-1500:]
                else:
                    row["measured"] = measured(out)
            results.append(row)
    Path(a.out).write_text(json.dumps(results, indent=2))
    print(f"| variant | strategy | GPUs | batch | predicted step s | measured step s | predicted MiB (tensors / "
          f"nvidia-smi) | measured MiB (allocated / reserved / NVML) |  ({gpu}, {a.img_size} px)")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        if "skipped" in r:
            print(f"| {r['variant']} | {r['strategy']} | - | {r['batch']} | | | | skipped: {r['skipped']} |")
            continue
        p, m = r["predicted"], r.get("measured") or {}
        got = (f"{m.get('peak_allocated_mib')} / {m.get('peak_reserved_mib')} / {m.get('nvml_used_mib')}"
               if m else ("failed" if "error" in r else "(dry run)"))
        print(f"| {r['variant']} | {r['strategy']} | {r['gpus']} | {r['batch']} | {p['step_s']:.3f} | "
              f"{m.get('step_s', '')} | {p['tensor_peak_mib']:.0f} / {p['used_mib']:.0f} | {got} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
