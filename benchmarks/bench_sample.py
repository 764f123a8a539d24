"""Sampling speed, exact (the official call sequence) vs fast (batched CFG, unguided uncond skipped).

Images/s and network forwards per image for a few (variant, resolution, batch, steps, CFG) settings.
Weights are random (speed does not depend on them); the state stays fp32, the network runs in fp32 on
the CPU and in bf16 autocast on CUDA (as the official evaluation).

    python benchmarks/bench_sample.py                       # CPU: JiT-Tiny/4 @32 and JiT-B/16 @256
    python benchmarks/bench_sample.py --device cuda --b16-batch 64 --b16-steps 50
    python benchmarks/bench_sample.py --quick               # tiny model only
"""

from __future__ import annotations

import argparse
import time

import torch

from jitmodel.config import DiffusionConfig, ModelConfig, SampleConfig
from jitmodel.denoiser import Denoiser
from jitmodel.sample import forwards_per_image, noise_for_ids, sample


def bench(variant: str, img_size: int, batch: int, steps: int, cfg: float, interval: tuple[float, float],
          device: torch.device, repeats: int = 1) -> list[dict]:
    den = Denoiser(ModelConfig(variant=variant, img_size=img_size), DiffusionConfig()).to(device).eval()
    with torch.no_grad():  # non-zero output layers so the arithmetic is that of a trained model
        for p in den.net.final_layer.parameters():
            p.normal_(0, 0.02)
    autocast = torch.bfloat16 if device.type == "cuda" else None
    z = noise_for_ids(list(range(batch)), 0, (3, img_size, img_size), device=device)
    y = torch.arange(batch, device=device) % 1000
    rows = []
    for mode in ("exact", "fast"):
        scfg = SampleConfig(steps=steps, cfg=cfg, interval_min=interval[0], interval_max=interval[1], mode=mode)
        with torch.no_grad():  # warm-up: one step
            sample(den.x_hat, z, y, scfg.model_copy(update={"steps": 1}), num_classes=1000, autocast=autocast)
        best = float("inf")
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.no_grad():
                _, stats = sample(den.x_hat, z, y, scfg, num_classes=1000, autocast=autocast)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        assert stats.forwards == forwards_per_image(scfg)
        rows.append({"variant": variant, "img": img_size, "batch": batch, "steps": steps, "cfg": cfg,
                     "interval": f"{interval[0]:g}-{interval[1]:g}", "mode": mode, "forwards": int(stats.forwards),
                     "calls": stats.calls, "seconds": best, "img_per_s": batch / best})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="tiny model only")
    p.add_argument("--b16-batch", type=int, default=2)
    p.add_argument("--b16-steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    rows = []
    for cfg in (2.9, 1.0):
        rows += bench("JiT-Tiny/4", 32, 16, 50, cfg, (0.1, 1.0), dev, a.repeats)
    if not a.quick:
        rows += bench("JiT-B/16", 256, a.b16_batch, a.b16_steps, 2.9, (0.1, 1.0), dev, 1)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}")
    print(f"{'variant':<11} {'img':>4} {'batch':>5} {'steps':>5} {'cfg':>4} {'interval':>8} {'mode':>5} "
          f"{'fwd/img':>7} {'calls':>5} {'s':>8} {'img/s':>8} {'speed-up':>8}")
    for r in rows:
        exact = next(x for x in rows if x["mode"] == "exact" and all(
            x[k] == r[k] for k in ("variant", "img", "batch", "steps", "cfg", "interval")))
        print(f"{r['variant']:<11} {r['img']:>4} {r['batch']:>5} {r['steps']:>5} {r['cfg']:>4g} {r['interval']:>8} "
              f"{r['mode']:>5} {r['forwards']:>7} {r['calls']:>5} {r['seconds']:>8.2f} {r['img_per_s']:>8.3f} "
              f"{exact['seconds'] / r['seconds']:>7.2f}x")


if __name__ == "__main__":
    main()
