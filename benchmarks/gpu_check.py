"""One command on any CUDA machine: measure JiT training steps, print predicted vs measured, write records.

For each variant (B/16, and L/16 where the planner says it fits) and micro-batch: jitmodel's real Denoiser on
the GPU with bf16 autocast, fused AdamW and both EMAs (``jitplan.planner.traced_step.TrainingStep``, the step
the memory tracers run under FakeTensorMode; one process), ``--warmup`` steps,
then ``--steps`` timed steps (synchronised). Measured: seconds per step, torch's peak allocated/reserved and
NVML's used memory (what nvidia-smi shows). Predicted: jitplan's time and memory models (priors, one GPU).
Each measurement becomes a calibration record (jitplan.calibration.records) for ``--out`` and, with
``--store``, the local store that later plans use.

    python benchmarks/gpu_check.py                                   # B/16 and L/16 at 8, 16, 32
    python benchmarks/gpu_check.py --batches 16,64 --no-compile --attention sdpa --store
    python benchmarks/gpu_check.py --dry-run --gpu RTX3060           # predictions only (no GPU, no torch)

Exit codes: 0 measured (or dry run); 1 nothing could be measured; 2 bad arguments or no CUDA device.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from jitplan.calibration.records import CalibrationRecord  # noqa: E402
from jitplan.hardware.schema import GPUSpec  # noqa: E402
from jitplan.planner import memory, timing  # noqa: E402

FIT_FRACTION = 0.92  # skip configurations predicted above this share of the card


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="JiT-B/16,JiT-L/16")
    ap.add_argument("--batches", default="8,16,32")
    ap.add_argument("--img-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--attention", choices=("exact", "sdpa"), default="exact")
    ap.add_argument("--out", default="gpu_check_records.yaml", help="write the records here (YAML)")
    ap.add_argument("--store", action="store_true", help="also fold the records into the local calibration store")
    ap.add_argument("--dry-run", action="store_true", help="predictions only: no GPU needed")
    ap.add_argument("--gpu", help="with --dry-run: the catalog GPU to predict for (default: the present one)")
    a = ap.parse_args(argv)
    try:
        a.batch_list = [int(b) for b in a.batches.split(",")]
        from jitmodel.variants import get_variant

        a.variant_list = [get_variant(v.strip()).name for v in a.variants.split(",")]
    except (ValueError, KeyError) as e:
        ap.error(f"--variants/--batches: {e}")
    if any(b < 1 for b in a.batch_list) or a.steps < 1 or a.warmup < 0:
        ap.error("batches and --steps must be >= 1, --warmup >= 0")
    return a


def predict(variant: str, gpu: GPUSpec, a: argparse.Namespace, batch: int) -> tuple[float, int]:
    t = timing.train_step_time(timing.TimeInputs.for_model(variant, gpu, img_size=a.img_size, micro_batch=batch,
                                                           compile=a.compile, attention=a.attention))
    m = memory.predict(memory.MemoryInputs.for_model(variant, a.img_size, compile=a.compile,
                                                     attention=a.attention), batch)
    return t.total_s, m.total


def measure(variant: str, a: argparse.Namespace, batch: int) -> tuple[float, int, int, int | None]:
    """(s/step, peak allocated, peak reserved, NVML used) of the trainer's step on cuda:0."""
    import torch

    from jitmodel.config import DataConfig, ModelConfig, TrainConfig
    from jitplan.planner.traced_step import TrainingStep

    dev = torch.device("cuda")
    torch.cuda.empty_cache()  # the previous configuration's tensors are gone by now
    torch.cuda.reset_peak_memory_stats(dev)
    cfg = TrainConfig(model=ModelConfig(variant=variant, img_size=a.img_size, attention=a.attention),
                      data=DataConfig(kind="digits"))
    step = TrainingStep(cfg, batch, device=dev, fused=True, compile=a.compile)  # the tracers' step, on the GPU

    for _ in range(a.warmup):
        step()
    torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    torch.cuda.synchronize(dev)
    dt = (time.perf_counter() - t0) / a.steps
    fn = getattr(torch.cuda, "device_memory_used", None)
    try:
        used = int(fn(dev)) if fn else None
    except Exception:  # no NVML on this machine: torch's numbers still stand
        used = None
    return dt, torch.cuda.max_memory_allocated(dev), torch.cuda.max_memory_reserved(dev), used  # freed on return


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    from jitplan.hardware.catalog import lookup, match_nvml_name

    if a.dry_run:
        gpu = lookup(a.gpu or "RTX3060")
        name, torch_v = gpu.name, "-"
    else:
        try:
            import torch
        except ImportError:
            print("Error: torch is not installed (use --dry-run for predictions only)", file=sys.stderr)
            return 2
        if not torch.cuda.is_available():
            print("Error: no CUDA device here (use --dry-run --gpu NAME for predictions only)", file=sys.stderr)
            return 2
        name = torch.cuda.get_device_name(0)
        gpu = match_nvml_name(name, torch.cuda.get_device_properties(0).total_memory)
        if gpu is None:
            print(f"Error: {name!r} is not in the GPU catalog: add a row to jitplan/hardware/catalog.yaml",
                  file=sys.stderr)
            return 2
        torch_v = torch.__version__
    today = datetime.date.today().isoformat()
    print(f"{gpu.name}: {a.attention} attention, {'compiled' if a.compile else 'eager'}, {a.img_size} px, "
          f"torch {torch_v}")
    print("| variant | batch | predicted s/step | measured s/step | error | predicted GiB | measured GiB (NVML) "
          "| reserved GiB |")
    print("|---|---|---|---|---|---|---|---|")
    records = []
    for variant in a.variant_list:
        for b in a.batch_list:
            t_pred, m_pred = predict(variant, gpu, a, b)
            if m_pred > FIT_FRACTION * gpu.memory_bytes:
                print(f"| {variant} | {b} | {t_pred:.3f} | skipped: predicted {m_pred / 2**30:.1f} GiB does not fit "
                      f"| | | | |")
                continue
            if a.dry_run:
                print(f"| {variant} | {b} | {t_pred:.3f} | - | - | {m_pred / 2**30:.2f} | - | - |")
                continue
            dt, alloc, reserved, used = measure(variant, a, b)
            shown = used or reserved
            print(f"| {variant} | {b} | {t_pred:.3f} | {dt:.3f} | {dt / t_pred - 1:+.0%} | {m_pred / 2**30:.2f} | "
                  f"{shown / 2**30:.2f} | {reserved / 2**30:.2f} |", flush=True)
            records.append(CalibrationRecord(
                gpu=gpu.name, variant=variant, img_size=a.img_size, compile=a.compile, attention=a.attention,
                batch_per_gpu=b, world_size=1, step_time_s=dt, memory_used_bytes=used or None,
                peak_allocated_bytes=alloc, peak_reserved_bytes=reserved, date=today,
                source=f"benchmarks/gpu_check.py on {name}, torch {torch_v}, {a.steps} steps after {a.warmup}"))
    if a.dry_run:
        return 0
    if not records:
        print("Error: nothing fitted this card", file=sys.stderr)
        return 1
    import yaml

    from jitmodel.atomic import atomic_write_text

    atomic_write_text(a.out, yaml.safe_dump([r.model_dump(mode="json", exclude_none=True) for r in records],
                                            sort_keys=False))
    print(f"records: {a.out}")
    if a.store:
        from jitplan.calibration.records import add_record, store_path

        for r in records:
            add_record(r)
        print(f"folded into {store_path()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
