"""Encode throughput of the SD VAE (the real sd-vae-ft-ema configuration, random weights) on this machine.

    python benchmarks/bench_vae_encode.py --size 256 --images 8 --batch 4 [--device cpu] [--threads N]

Times ``jitmodel.autoencoder.encode`` (posterior mean x 0.18215, fp32, no grad) on random images in [-1, 1],
after one warm-up batch; prints images/s and the achieved GFLOP/s from the planner's count
(``jitplan.planner.latent.encoder_flops_per_image``). Weights do not change the speed, so random ones serve.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from jitmodel import autoencoder as ae
from jitplan.planner.latent import encoder_flops_per_image


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    vae = ae.build_vae("random", device=a.device, warn=False)
    x = torch.rand(a.batch, 3, a.size, a.size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ae.encode(vae, x)  # warm-up
    t0 = time.perf_counter()
    done = 0
    while done < a.images:
        ae.encode(vae, x)
        done += a.batch
    if a.device == "cuda":
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    flops = encoder_flops_per_image(a.size)
    print(json.dumps({"size": a.size, "images": done, "batch": a.batch, "device": a.device,
                      "threads": torch.get_num_threads(), "seconds": round(secs, 2),
                      "images_per_s": round(done / secs, 3), "gflop_per_s": round(done * flops / secs / 1e9, 1),
                      "load_average": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
