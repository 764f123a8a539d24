"""Mass sampling: labels, shards, resume, progress, FID end to end (1 process and 2 gloo ranks), online hook."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
from PIL import Image  # noqa: E402
from test_sample_tinyckpt import tiny_checkpoint  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

from jitmodel.config import DataConfig, EvalConfig, ModelConfig, SampleConfig, TrainConfig  # noqa: E402
from jitmodel.evaluate import (  # noqa: E402
    EvalJob,
    Progress,
    due,
    evaluate,
    generate_shard,
    image_name,
    label_of,
    online_eval,
    shard,
)

REPO = Path(__file__).resolve().parents[1]
SMALL = SampleConfig(steps=3, cfg=2.0, interval_min=0.1, interval_max=1.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from jitmodel.sample import load_for_sampling

    path = tiny_checkpoint(tmp_path_factory)
    return path, load_for_sampling(path)


@pytest.fixture(scope="module")
def digits_ref(tmp_path_factory):
    """Reference statistics of 200 real digits at 32 px, made by ``jitmodel fid-stats``."""
    from sklearn.datasets import load_digits

    from jitmodel.cli import run

    root = tmp_path_factory.mktemp("digits-real")
    d = load_digits()
    for i in range(200):
        im = Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8)).resize((32, 32), Image.BICUBIC)
        im.convert("RGB").save(root / f"{i:05d}.png")
    out = root.parent / "digits-ref.npz"
    assert run(["fid-stats", str(root), "--out", str(out), "--features", "digits", "--device", "cpu"]) == 0
    return out


def _job(out_dir: Path, n: int = 20, batch: int = 8) -> EvalJob:
    return EvalJob(out_dir=out_dir, num_images=n, num_classes=10, img_size=32, sample=SMALL, batch=batch)


def _pixels(folder: Path, n: int) -> np.ndarray:
    return np.stack([np.asarray(Image.open(folder / image_name(i, n))) for i in range(n)]).astype(int)


# ---------------------------------------------------------------------------------------- pure parts
def test_labels_are_class_contiguous_like_the_official():
    assert [label_of(i, 50_000, 1000) for i in (0, 49, 50, 49_999)] == [0, 0, 1, 999]
    assert [label_of(i, 20, 10) for i in range(6)] == [0, 0, 1, 1, 2, 2]
    assert sorted(shard(10, 0, 3) + shard(10, 1, 3) + shard(10, 2, 3)) == list(range(10))
    assert shard(10, 1, 3) == [1, 4, 7]
    assert image_name(7, 50_000) == "00007.png" and image_name(7, 200_000) == "000007.png"


def test_cadence_defaults_skip_epoch_0_unless_asked():
    cfg = TrainConfig(data=DataConfig(kind="digits"), epochs=81, eval=EvalConfig(online=True, every_epochs=40))
    assert [e for e in range(81) if due(e, cfg)] == [40, 80]
    cfg0 = cfg.model_copy(update={"eval": EvalConfig(online=True, every_epochs=40, at_epoch0=True)})
    assert [e for e in range(81) if due(e, cfg0)] == [0, 40, 80]
    assert not any(due(e, cfg.model_copy(update={"eval": EvalConfig(online=False)})) for e in range(81))


def test_progress_line_has_rate_and_eta():
    buf = io.StringIO()
    p = Progress(total=100, done=20, world=2, enabled=True, stream=buf)
    p.t0 -= 10  # pretend 10 s have passed
    p.update(10, force=True)  # rank 0 made 10, the world about 20
    line = buf.getvalue().strip()
    assert line.startswith("gen 40/100 | ") and "img/s" in line and "ETA 00:00:" in line
    rate = float(line.split("|")[1].split()[0])
    assert 1.5 < rate < 2.5  # 20 images in ~10 s


# ---------------------------------------------------------------------------------------- generation
@pytest.mark.slow
def test_generation_resumes_by_skipping_existing_images(tiny, tmp_path):
    _, m = tiny
    job = _job(tmp_path / "imgs")
    assert generate_shard(m.x_hat, job, progress=False) == 20
    before = _pixels(job.out_dir, 20)
    assert generate_shard(m.x_hat, job, progress=False) == 0  # nothing left to do
    for i in (3, 17):
        (job.out_dir / image_name(i, 20)).unlink()
    assert generate_shard(m.x_hat, job, progress=False) == 2  # only the missing ones
    after = _pixels(job.out_dir, 20)
    assert np.abs(after - before).max() <= 1  # same noise per id: the same images (rounding aside)
    assert not list(job.out_dir.glob(".*"))  # no temp files left behind


def test_shards_of_two_ranks_make_the_same_images_as_one(tiny, tmp_path):
    _, m = tiny
    one, two = _job(tmp_path / "one", n=12), _job(tmp_path / "two", n=12, batch=4)
    generate_shard(m.x_hat, one, progress=False)
    assert generate_shard(m.x_hat, two, rank=0, world=2, progress=False) == 6
    assert generate_shard(m.x_hat, two, rank=1, world=2, progress=False) == 6
    assert np.abs(_pixels(one.out_dir, 12) - _pixels(two.out_dir, 12)).max() <= 1


def test_missing_reference_stats_fail_before_any_image(tiny, tmp_path):
    _, m = tiny
    with pytest.raises(ValueError, match="not found"):
        evaluate(m.x_hat, _job(tmp_path / "x"), ref_stats=tmp_path / "none.npz")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_fid_end_to_end_with_the_digits_extractor(tiny, tmp_path, digits_ref):
    from jitmodel.fid import get_extractor

    _, m = tiny
    job = _job(tmp_path / "imgs", n=40, batch=20)
    rep = evaluate(m.x_hat, job, extractor=get_extractor("digits"), ref_stats=digits_ref, progress=False,
                   pack_npz=True)
    assert rep.generated == 40 and rep.fid is not None and rep.fid > 0 and 1.0 <= rep.inception_score <= 10.0
    assert rep.forwards_per_image < 2 * 5
    arr = np.load(job.out_dir / "samples.npz")["arr_0"]
    assert arr.shape == (40, 32, 32, 3) and arr.dtype == np.uint8
    again = evaluate(m.x_hat, job, extractor=get_extractor("digits"), ref_stats=digits_ref, progress=False)
    assert again.generated == 0 and again.fid == pytest.approx(rep.fid, rel=1e-9)  # resumed: scored as is


@pytest.mark.slow
def test_torchrun_two_gloo_ranks_cli(tiny, tmp_path, digits_ref):
    """``torchrun -m jitmodel evaluate`` on 2 CPU ranks: sharded images, one result line, same FID as 1 rank."""
    ckpt, m = tiny
    out = tmp_path / "eval"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "jitmodel",
           "evaluate", "--ckpt", str(ckpt), "--out-dir", str(out), "--num-images", "20", "--batch", "5", "--steps", "3",
           "--ref-stats", str(digits_ref), "--device", "cpu", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1  # rank 0 reports
    rep = json.loads(lines[0])
    assert rep["images"] == 20 and rep["generated"] == 20 and rep["fid"] > 0 and "inception_score" in rep
    assert len(list(out.glob("*.png"))) == 20
    from jitmodel.fid import get_extractor

    single = evaluate(m.x_hat, _job(out, n=20, batch=5), extractor=get_extractor("digits"), ref_stats=digits_ref,
                      progress=False)
    assert single.generated == 0 and single.fid == pytest.approx(rep["fid"], rel=1e-6)
    assert single.inception_score == pytest.approx(rep["inception_score"], rel=1e-6)


@pytest.mark.slow
def test_online_eval_hook(tiny, tmp_path, digits_ref):
    _, m = tiny
    cfg = TrainConfig(model=ModelConfig(variant="JiT-Tiny/8", img_size=32, num_classes=10),
                      data=DataConfig(kind="digits"), epochs=100, sample=SMALL,
                      eval=EvalConfig(online=True, every_epochs=40, num_images=20, gen_batch=10,
                                      ref_stats=str(digits_ref)))
    assert online_eval(m.denoiser, cfg, epoch=0, device="cpu", out_dir=tmp_path) == {}  # not at epoch 0
    m.denoiser.train()
    res = online_eval(m.denoiser, cfg, epoch=40, device="cpu", out_dir=tmp_path)  # stats name the extractor
    assert res["fid"] > 0 and res["eval_images"] == 20 and "inception_score" in res
    assert m.denoiser.training  # mode restored
    assert not any((tmp_path / "eval").iterdir())  # images deleted after scoring, as the official code does
    res_net = online_eval(m.denoiser.net, cfg, epoch=80, device="cpu", out_dir=tmp_path)  # a bare JiT works too
    assert res_net["fid"] == pytest.approx(res["fid"], rel=1e-6)


# ---------------------------------------------------------------------------------------- chunks and barriers
def _zero_x_hat(z, t, y):
    import torch

    return torch.zeros_like(z)


def _chunked_rank(rank: int, world: int, out: str, init: str, n: int, chunk: int) -> None:
    import json

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    calls = []
    real = dist.barrier
    dist.barrier = lambda *a, **k: (calls.append(1), real(*a, **k))[1]  # type: ignore[assignment]  # count them
    try:
        job = EvalJob(out_dir=Path(out), num_images=n, num_classes=10, img_size=8, sample=SMALL, batch=1,
                      chunk=chunk)
        made = generate_shard(_zero_x_hat, job, rank=rank, world=world, progress=False)
        Path(out, f"rank{rank}.json").write_text(json.dumps({"made": made, "barriers": len(calls)}))
    finally:
        dist.barrier = real
        dist.destroy_process_group()


@pytest.mark.slow
def test_chunked_generation_meets_at_one_barrier_per_chunk_on_every_rank(tmp_path):
    """Uneven shards (7 images on 2 ranks) and a rank that resumes with images already on disk still call
    the same number of barriers: no rank is left waiting for a barrier the other never calls."""
    import json

    import torch.multiprocessing as mp

    from jitmodel.evaluate import chunk_schedule

    out = tmp_path / "imgs"
    out.mkdir()
    (out / image_name(1, 7)).write_bytes(b"")  # rank 1 resumes: its first image exists already
    mp.spawn(_chunked_rank, args=(2, str(out), f"file://{tmp_path / 'store'}", 7, 2), nprocs=2, join=True)
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["barriers"] == r1["barriers"] == len(chunk_schedule(7, 0, 2, 2)) == 2
    assert (r0["made"], r1["made"]) == (4, 2)
    assert sorted(p.name for p in out.glob("*.png")) == [image_name(i, 7) for i in range(7)]


def test_chunk_schedule_gives_every_rank_the_same_number_of_chunks():
    from jitmodel.evaluate import chunk_schedule

    for n in (1, 7, 50, 101):
        for world in (1, 2, 3, 8):
            for chunk in (1, 3, 16):
                per_rank = [chunk_schedule(n, r, world, chunk) for r in range(world)]
                assert len({len(c) for c in per_rank}) == 1
                assert sorted(i for c in per_rank for part in c for i in part) == list(range(n))
