"""Mass sampling and FID/IS, sharded over torchrun ranks, resumable, with readable progress.

Image ``i`` has class ``i * num_classes // N`` (50 per class at 50k, class-contiguous like the official),
its own noise (seeded by ``seed`` and ``i``) and the file ``{i:05d}.png``. Rank r makes the ids
r, r + W, r + 2W, ... that are not on disk yet, so a stopped run resumes where it was, on any world size,
and the images do not depend on the batch size or the number of ranks.

Staying inside the NCCL timeout: generation has no collective at all (the official code calls a barrier
after every batch, so every rank waits for rank 0's PNG writes); rank 0 only prints progress. The ranks
meet only after their shards, in two small all-reduces (the image count, then the feature sums n, sum f,
sum f f^T and the IS split sums), and strided shards keep them within a batch of each other. Every rank
then computes the same FID/IS from the merged sums (seconds), so no rank waits on another's arithmetic.
During training a plan cuts generation into chunks (``eval.chunk_images``) with a barrier after each, so a
rank that hangs is caught within one chunk by the plan's minute-long process-group timeout.

    # one process
    jitmodel evaluate --ckpt runs/jit/last.pt --out-dir runs/jit/eval --ref-stats jit_in256_stats.npz
    # 8 GPUs
    torchrun --nproc-per-node 8 -m jitmodel evaluate --ckpt last.pt --out-dir eval --cfg 2.9 \\
        --interval 0.1,1.0 --ref-stats jit_in256_stats.npz
"""

from __future__ import annotations

import functools
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from jitmodel.atomic import atomic_write
from jitmodel.config import SampleConfig, TrainConfig
from jitmodel.dist import amp_dtype
from jitmodel.fid import FeatureExtractor, FeatureSums, frechet_distance, load_images, load_stats
from jitmodel.inception_sums import ISSums, split_of_ids
from jitmodel.sample import XHatFn, forwards_per_image, noise_for_ids, sample, save_png, to_uint8


# --------------------------------------------------------------------------------------------------------
# Ids, labels, shards (pure)
# --------------------------------------------------------------------------------------------------------
def label_of(i: int, num_images: int, num_classes: int) -> int:
    """Class of image ``i``: class-contiguous blocks of ``num_images / num_classes`` images."""
    return i * num_classes // num_images


def shard(num_images: int, rank: int, world: int) -> list[int]:
    """Ids of one rank: strided, so shards differ by at most one image."""
    return list(range(rank, num_images, world))


def image_name(i: int, num_images: int) -> str:
    return f"{i:0{max(5, len(str(num_images - 1)))}d}.png"


# --------------------------------------------------------------------------------------------------------
# Progress (rank 0)
# --------------------------------------------------------------------------------------------------------
class Progress:
    """``gen 1234/50000 | 12.3 img/s | ETA 1:02:03`` on stderr: redrawn on a TTY, a line every 30 s elsewhere."""

    def __init__(self, total: int, done: int, world: int, enabled: bool, stream: Any = None):
        self.total, self.done, self.world, self.enabled = total, done, world, enabled
        self.stream = stream or sys.stderr
        self.t0 = self.last = time.monotonic()
        self.made = 0
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def line(self) -> str:
        dt = max(time.monotonic() - self.t0, 1e-9)
        rate = self.made * self.world / dt  # rank 0's rate times the world: ranks run the same shard sizes
        left = max(self.total - self.done, 0)
        eta = time.strftime("%H:%M:%S", time.gmtime(left / rate)) if rate > 0 else "--:--:--"
        return f"gen {min(self.done, self.total)}/{self.total} | {rate:.1f} img/s | ETA {eta}"

    def update(self, n: int, force: bool = False) -> None:
        self.made += n
        self.done += n * self.world
        now = time.monotonic()
        if not self.enabled or not (force or now - self.last >= (0.5 if self.tty else 30.0)):
            return
        self.last = now
        self.stream.write(("\r" + self.line()) if self.tty else self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write(("\r" if self.tty else "") + self.line() + "\n")
            self.stream.flush()


# --------------------------------------------------------------------------------------------------------
# Generation and scoring
# --------------------------------------------------------------------------------------------------------
@dataclass
class EvalJob:
    """What to generate and how (everything but the network)."""

    out_dir: Path
    num_images: int
    num_classes: int
    img_size: int
    sample: SampleConfig
    in_channels: int = 3
    seed: int = 0
    noise_scale: float = 1.0
    t_eps: float = 0.05
    batch: int = 64
    autocast: torch.dtype | None = None
    chunk: int | None = None  # images per rank between barriers (None: no barrier while generating)


@dataclass
class EvalReport:
    images: int
    generated: int  # by all ranks in this run (the rest were on disk already)
    seconds: float
    images_per_s: float
    forwards_per_image: int
    fid: float | None = None
    inception_score: float | None = None
    inception_score_std: float | None = None
    out_dir: str = ""


def _dist():
    import torch.distributed as d

    return d if d.is_available() and d.is_initialized() else None


def chunk_schedule(num_images: int, rank: int, world: int, chunk: int | None) -> list[list[int]]:
    """This rank's ids cut into chunks; every rank gets the same number of chunks (the shards differ by at
    most one image), so the barrier after each chunk is met by all ranks.

        >>> [len(c) for c in chunk_schedule(10, 0, 2, 2)], [len(c) for c in chunk_schedule(10, 1, 2, 2)]
        ([2, 2, 1], [2, 2, 1])
        >>> chunk_schedule(5, 1, 2, None)
        [[1, 3]]
    """
    mine = shard(num_images, rank, world)
    if not chunk:
        return [mine]
    longest = -(-num_images // world)
    return [mine[k:k + chunk] for k in range(0, longest, chunk)]


def generate_shard(x_hat: XHatFn, job: EvalJob, *, rank: int = 0, world: int = 1, device: Any = "cpu",
                   progress: bool = True) -> int:
    """Make this rank's missing images; returns how many it made. With ``job.chunk`` every rank meets the
    others at a barrier after each chunk, so no rank waits at a collective longer than one chunk takes (the
    planner's process-group timeout counts on it); without it, no collectives."""
    job.out_dir.mkdir(parents=True, exist_ok=True)
    chunks = chunk_schedule(job.num_images, rank, world, job.chunk)
    name = functools.partial(image_name, num_images=job.num_images)
    todo_n = sum(1 for c in chunks for i in c if not (job.out_dir / name(i)).is_file())
    bar = Progress(job.num_images, job.num_images - todo_n * world, world, progress and rank == 0)
    shape = (job.in_channels, job.img_size, job.img_size)
    d = _dist() if job.chunk else None
    for ids_of_chunk in chunks:
        todo = [i for i in ids_of_chunk if not (job.out_dir / name(i)).is_file()]
        for k in range(0, len(todo), job.batch):
            ids = todo[k:k + job.batch]
            z = noise_for_ids(ids, job.seed, shape, job.noise_scale, device)
            y = torch.tensor([label_of(i, job.num_images, job.num_classes) for i in ids], device=device)
            with torch.no_grad():
                img, _ = sample(x_hat, z, y, job.sample, num_classes=job.num_classes, t_eps=job.t_eps,
                                autocast=job.autocast)
            for i, im in zip(ids, to_uint8(img), strict=True):
                save_png(job.out_dir / name(i), im.permute(1, 2, 0))
            bar.update(len(ids))
        if d is not None:
            d.barrier()
    bar.close()
    return todo_n


def score_shard(job: EvalJob, extractor: FeatureExtractor, *, rank: int = 0, world: int = 1,
                splits: int = 10) -> tuple[FeatureSums, ISSums | None]:
    """Features of this rank's images (read back from disk, so resumed runs score every image)."""
    ids = shard(job.num_images, rank, world)
    split = split_of_ids(job.num_images, splits)
    sums, isc = FeatureSums(), None
    for k in range(0, len(ids), job.batch):
        chunk = ids[k:k + job.batch]
        feats, logits = extractor(load_images([job.out_dir / image_name(i, job.num_images) for i in chunk]))
        sums.add(feats)
        if logits is not None:
            isc = isc or ISSums(splits)
            isc.add(split[chunk], logits)
    return sums, isc


def _all_reduce(arrays: list[np.ndarray], device: Any) -> list[np.ndarray]:
    d = _dist()
    if d is None:
        return arrays
    flat = torch.from_numpy(np.concatenate([a.ravel() for a in arrays])).to(device)
    d.all_reduce(flat)
    out, k = [], 0
    for a in arrays:
        out.append(flat[k:k + a.size].cpu().numpy().reshape(a.shape))
        k += a.size
    return out


def evaluate(x_hat: XHatFn, job: EvalJob, *, extractor: FeatureExtractor | None = None,
             ref_stats: str | Path | None = None, rank: int = 0, world: int = 1, device: Any = "cpu",
             progress: bool = True, pack_npz: bool = False) -> EvalReport:
    """Generate the images (sharded, resumable), then FID against ``ref_stats`` and IS, on every rank.

    Load the reference statistics before generating, so a bad path fails in seconds, not hours.
    """
    ref = load_stats(ref_stats) if ref_stats else None
    if ref is not None and extractor is None:
        raise ValueError("FID needs a feature extractor")
    if ref is not None and extractor is not None and ref[2] and ref[2] != extractor.name:
        raise ValueError(f"reference statistics were made with the {ref[2]!r} extractor, not {extractor.name!r}")
    t0 = time.monotonic()
    made = generate_shard(x_hat, job, rank=rank, world=world, device=device, progress=progress)
    gen_s = time.monotonic() - t0
    d = _dist()
    made_all = int(_all_reduce([np.array([float(made)])], device)[0][0]) if d else made
    report = EvalReport(images=job.num_images, generated=made_all, seconds=gen_s,
                        images_per_s=made_all / gen_s if gen_s > 0 else 0.0,
                        forwards_per_image=forwards_per_image(job.sample), out_dir=str(job.out_dir))
    if extractor is not None:
        sums, isc = score_shard(job, extractor, rank=rank, world=world)
        dim = extractor.dim
        s = sums.s if sums.s is not None else np.zeros(dim)
        ss = sums.ss if sums.ss is not None else np.zeros((dim, dim))
        parts = [np.array([float(sums.n)]), s, ss]
        if isc is not None:
            parts += [isc.n, isc.p if isc.p is not None else np.zeros(0), isc.plogp]
        merged = _all_reduce(parts, device)
        sums = FeatureSums(n=int(merged[0][0]), s=merged[1], ss=merged[2])
        if ref is not None:
            mu, sigma = sums.mu_sigma()
            report.fid = frechet_distance(mu, sigma, ref[0], ref[1])
        if isc is not None:
            isc.n, isc.p, isc.plogp = merged[3], merged[4], merged[5]
            report.inception_score, report.inception_score_std = isc.score()
    elif d is not None:
        d.barrier()  # npz packing below reads every rank's files
    if pack_npz and rank == 0:
        pack_images_npz(job.out_dir, job.num_images)
    return report


def pack_images_npz(folder: Path, num_images: int) -> Path:
    """All images as one ``samples.npz`` (``arr_0``: N x H x W x 3 uint8, the ADM evaluation format)."""
    arr = load_images([folder / image_name(i, num_images) for i in range(num_images)]).permute(0, 2, 3, 1).numpy()
    return atomic_write(folder / "samples.npz", lambda f: np.savez(f, arr_0=arr))


# --------------------------------------------------------------------------------------------------------
# The trainer's hook
# --------------------------------------------------------------------------------------------------------
def due(epoch: int, cfg: TrainConfig) -> bool:
    """Whether the trainer evaluates after (0-based) ``epoch``: ``TrainConfig.eval_due``, the official
    cadence (every ``every_epochs`` and at the last epoch; epoch 0 only with ``at_epoch0``).

    >>> from jitmodel.config import DataConfig, EvalConfig, TrainConfig
    >>> cfg = TrainConfig(data=DataConfig(kind="digits"), epochs=100, eval=EvalConfig(online=True))
    >>> [e for e in range(100) if due(e, cfg)]
    [40, 80, 99]
    """
    return cfg.eval_due(epoch)


def online_eval(net: torch.nn.Module, cfg: TrainConfig, *, epoch: int, device: Any, out_dir: Path,
                extractor_factory: Callable[[], FeatureExtractor] | None = None) -> dict[str, float]:
    """Called by the trainer on every rank with EMA weights swapped in; {} when no evaluation is due.

    ``net`` is a Denoiser (or anything with ``x_hat``) or a bare JiT (its output read per
    ``cfg.diffusion.prediction``). Images go to ``out_dir/eval/epoch-XXXX-...`` and are deleted after
    scoring, as the official code does; FID needs ``cfg.eval.ref_stats``.
    """
    if not due(epoch, cfg):
        return {}
    from jitmodel.dist import DistEnv  # lazy: start-up (numpy, pynvml, torch)
    from jitmodel.fid import get_extractor  # lazy: start-up (numpy)

    env = DistEnv.from_env()
    s = cfg.sample
    name = (f"epoch-{epoch:04d}-{s.method}-steps{s.steps}-cfg{s.cfg}-interval{s.interval_min}-{s.interval_max}"
            f"-image{cfg.eval.num_images}-res{cfg.model.img_size}")
    x_hat = x_hat_of(net, cfg.diffusion.prediction, cfg.diffusion.t_eps)
    dev = torch.device(device)
    job = EvalJob(out_dir=Path(out_dir) / "eval" / name, num_images=cfg.eval.num_images,
                  num_classes=cfg.model.num_classes, img_size=cfg.model.img_size, sample=s,
                  in_channels=cfg.model.in_channels, seed=cfg.seed, noise_scale=cfg.diffusion.noise_scale,
                  t_eps=cfg.diffusion.t_eps, batch=cfg.eval.gen_batch, chunk=cfg.eval.chunk_images,
                  autocast=amp_dtype(cfg.precision, dev) if dev.type == "cuda" else None)  # the run's: fp16 on a T4
    extractor = None
    if cfg.eval.ref_stats:  # the extractor the reference statistics were made with (Inception by default)
        name = load_stats(cfg.eval.ref_stats)[2] or "inception"
        extractor = extractor_factory() if extractor_factory else get_extractor(name, str(dev))
    was_training = net.training
    net.eval()
    try:
        rep = evaluate(x_hat, job, extractor=extractor, ref_stats=cfg.eval.ref_stats, rank=env.rank,
                       world=env.world_size, device=dev)
    finally:
        net.train(was_training)
    out = {"eval_images": float(rep.images), "eval_seconds": rep.seconds, "eval_images_per_s": rep.images_per_s}
    if rep.fid is not None:
        out["fid"] = rep.fid
    if rep.inception_score is not None:
        out["inception_score"] = rep.inception_score
    if env.rank == 0 and cfg.eval.ref_stats:
        shutil.rmtree(job.out_dir, ignore_errors=True)
    return out


def x_hat_of(net: torch.nn.Module, prediction: str = "x", t_eps: float = 0.05) -> XHatFn:
    """A sampler's x_hat from a Denoiser (its own ``x_hat``) or a bare JiT network."""
    if callable(getattr(net, "x_hat", None)):
        return cast(XHatFn, net.x_hat)
    inner = getattr(net, "module", net)  # DDP
    if callable(getattr(inner, "x_hat", None)):
        return cast(XHatFn, inner.x_hat)
    from jitmodel.objectives import to_x  # lazy: start-up (numpy, pynvml, torch)

    def fn(z: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return to_x(inner(z, t, y).float(), z, t, prediction, t_eps)

    return fn
