"""Host RAM of jitmodel's own DataLoader workers over an ImageNet-sized index, measured (RSS, PSS, USS).

    nice -n 10 python benchmarks/bench_workers.py --root /tmp/jit-imagenet-links   # builds the index once

The dataset: 1,281,167 hard links in 1,000 class folders to a handful of real photographs (scikit-learn's
china.jpg and flower.jpg, cropped and saved as ~500 x 375 JPEGs like ImageNet's average): the scanner, the
ImageFolder index and the loader see ImageNet's shape; the disk holds 8 files.

Two phases per worker count (1, 4, 8; micro-batch 16, prefetch 2, as the plan's story run):
1. decode window (``--window`` s): real JPEG decode + ADM crop through ``jitmodel.data.build_loader``; every
   second, each worker's RSS / PSS / USS (psutil memory_full_info), the main process and /dev/shm.
2. index pass: a whole epoch of indices (1,281,167 lookups of ImageFolder.samples, as a full pass makes) with
   the decode replaced by a fixed tiny tensor, so it takes a minute instead of hours on 2 cores. What a worker
   grows by here is the copy-on-read copy of the index (refcount writes dirty the pages the parent shares).

Prints one JSON line per sample (--trace FILE) and a summary table; the planner's figures beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

N_IMAGES = 1_281_167
N_CLASSES = 1000


def build_index(root: Path) -> None:
    """root/train/n0000../i.JPEG hard links to 8 real JPEGs, 4 copies each (once; ~1 minute)."""
    train = root / "train"
    if (root / ".complete").is_file():
        return
    from PIL import Image
    from sklearn.datasets import load_sample_image

    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    sources = []
    for name in ("china.jpg", "flower.jpg"):
        im = Image.fromarray(load_sample_image(name))
        for k, (w, h) in enumerate(((500, 375), (500, 333), (375, 500), (640, 480))):
            p = src / f"{name[:-4]}_{k}.JPEG"
            im.resize((w, h), Image.Resampling.BICUBIC).save(p, quality=90)
            for copy in range(4):  # ext4 allows 65,000 links per inode: 32 inodes of ~40,000 links each
                q = src / f"{p.stem}_{copy}.JPEG"
                shutil.copyfile(p, q)
                sources.append(q)
    per, extra = divmod(N_IMAGES, N_CLASSES)
    n = 0
    for c in range(N_CLASSES):
        d = train / f"n{c:08d}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per + (1 if c < extra else 0)):
            os.link(sources[n % len(sources)], d / f"n{c:08d}_{i}.JPEG")
            n += 1
    (root / ".complete").write_text(str(n))


def shm_used() -> int:
    try:
        return shutil.disk_usage("/dev/shm").used
    except OSError:
        return 0


def sample(main, t0: float, phase: str, workers: int, out) -> dict:  # type: ignore[no-untyped-def]
    import psutil

    row = {"t": round(time.time() - t0, 2), "phase": phase, "workers": workers, "shm": shm_used()}
    m = main.memory_full_info()
    row["main"] = {"rss": m.rss, "pss": m.pss, "uss": m.uss}
    ws = []
    for ch in main.children():
        try:
            f = ch.memory_full_info()
            ws.append({"pid": ch.pid, "rss": f.rss, "pss": f.pss, "uss": f.uss})
        except psutil.Error:
            continue
    row["worker"] = ws
    if out:
        out.write(json.dumps(row) + "\n")
    return row


def run(ds, workers: int, window_s: float, out, touch: bool, passes_of: int) -> dict:  # type: ignore[no-untyped-def]
    import psutil
    import torch

    from jitmodel.config import DataConfig
    from jitmodel.data import ResumableSampler, build_loader

    cfg = DataConfig(path="unused", num_workers=workers, prefetch_factor=2, pin_memory=False)
    n = passes_of or len(ds)
    sampler = ResumableSampler(num_samples=n, world_size=1, rank=0, seed=0, micro_batch=16, hflip=True)
    loader = build_loader(ds, sampler, cfg, torch.device("cpu"), seed=0)
    main = psutil.Process()
    t0 = time.time()
    last, images, rows = 0.0, 0, []
    it = iter(loader)
    phase = "index pass" if touch else "decode window"
    rows.append(sample(main, t0, phase, workers, out))
    for batch in it:
        images += batch[0].shape[0]
        now = time.time()
        if now - last >= (5.0 if touch else 1.0):
            rows.append(sample(main, t0, phase, workers, out))
            last = now
        if not touch and now - t0 >= window_s:
            break
    rows.append(sample(main, t0, phase, workers, out))
    end = rows[-1]
    res = {"phase": phase, "workers": workers, "images": images, "seconds": round(time.time() - t0, 1),
           "worker_rss_max": max((w["rss"] for r in rows for w in r["worker"]), default=0),
           "worker_pss_end": sum(w["pss"] for w in end["worker"]) / max(len(end["worker"]), 1),
           "worker_uss_end": sum(w["uss"] for w in end["worker"]) / max(len(end["worker"]), 1),
           "worker_pss_start": sum(w["pss"] for w in rows[0]["worker"]) / max(len(rows[0]["worker"]), 1),
           "main_rss": end["main"]["rss"], "main_pss": end["main"]["pss"],
           "shm_max": max(r["shm"] for r in rows) - rows[0]["shm"]}
    del it, loader
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="/tmp/jit-imagenet-links")
    ap.add_argument("--window", type=float, default=45.0, help="seconds of real decode per worker count")
    ap.add_argument("--workers", default="1,4,8")
    ap.add_argument("--trace", default=None, help="write every sample as JSON lines here")
    args = ap.parse_args()
    root = Path(args.root)
    t = time.time()
    build_index(root)
    print(f"index: {N_IMAGES:,} links under {root} ({time.time() - t:.0f} s)", file=sys.stderr)
    import torch

    from jitmodel.data import ImageFolder

    torch.set_num_threads(1)
    t = time.time()
    ds = ImageFolder(root, 256)
    print(f"ImageFolder: {len(ds):,} samples, {len(ds.classes)} classes ({time.time() - t:.0f} s)", file=sys.stderr)
    tiny = torch.zeros(3, 8, 8, dtype=torch.uint8)

    class IndexOnly(ImageFolder):
        def _load(self, index: int):  # type: ignore[no-untyped-def]
            path, label = self.samples[index]  # what a full pass does to the index (refcounts)
            return tiny, label

    touch = object.__new__(IndexOnly)
    touch.__dict__.update(ds.__dict__)
    out = open(args.trace, "w") if args.trace else None
    results = []
    for w in (int(x) for x in args.workers.split(",")):
        results.append(run(ds, w, args.window, out, touch=False, passes_of=0))
        print(json.dumps(results[-1]), file=sys.stderr)
    results.append(run(touch, 4, 0, out, touch=True, passes_of=0))
    print(json.dumps(results[-1]), file=sys.stderr)
    from jitplan.planner import workers as wm

    planned = wm.worker_ram_bytes(16, 256, N_IMAGES)
    print(json.dumps({"results": results, "planner_worker_bytes": planned,
                      "planner_index_bytes": wm.INDEX_BYTES_PER_IMAGE * N_IMAGES}))


if __name__ == "__main__":
    main()
