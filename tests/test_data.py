"""jitmodel.data: ADM crop, image folders, digits, the resumable sampler, the worker-kill test hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

from jitmodel.config import DataConfig
from jitmodel.data import (
    INJECT_ENV,
    Digits,
    ImageFolder,
    ResumableSampler,
    arm_worker_kill,
    build_dataset,
    build_loader,
    center_crop_arr,
    pil_to_uint8,
    worker_kill_threshold,
)


def make_folder(root, classes=("n01", "n02", "n03"), per_class=4, size=(12, 10), seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / "train" / c).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / "train" / c / f"img{i}.png")
    return root


# --------------------------------------------------------------------------- transforms

@pytest.mark.parametrize("w,h,size", [(500, 375, 64), (64, 200, 64), (30, 20, 16), (16, 16, 16), (1024, 1024, 32)])
def test_center_crop_gives_square_of_target_size(w, h, size):
    img = Image.new("RGB", (w, h))
    assert center_crop_arr(img, size).size == (size, size)


def test_center_crop_keeps_the_centre():
    # a 40x20 image: left third red, middle third green, right third blue -> the 8x8 crop is all green
    arr = np.zeros((20, 60, 3), dtype=np.uint8)
    arr[:, :20, 0], arr[:, 20:40, 1], arr[:, 40:, 2] = 255, 255, 255
    out = np.asarray(center_crop_arr(Image.fromarray(arr), 10))
    assert out[:, :, 1].min() > 200 and out[:, :, 0].max() < 60 and out[:, :, 2].max() < 60


def test_pil_to_uint8_layout():
    arr = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)  # (H, W, C)
    t = pil_to_uint8(Image.fromarray(arr))
    assert t.dtype == torch.uint8 and t.shape == (3, 2, 3)
    assert t[2, 1, 0] == arr[1, 0, 2]


# --------------------------------------------------------------------------- datasets

def test_imagefolder_classes_sorted_and_labels(tmp_path):
    make_folder(tmp_path, classes=("n03", "n01", "n02"), per_class=2)
    (tmp_path / "train" / "n01" / "notes.txt").write_text("not an image")
    ds = ImageFolder(tmp_path, img_size=8)
    assert ds.classes == ["n01", "n02", "n03"]
    assert len(ds) == 6
    img, label = ds[(5, False)]
    assert img.shape == (3, 8, 8) and img.dtype == torch.uint8 and label == 2
    flipped, _ = ds[(5, True)]
    assert torch.equal(flipped, img.flip(-1))


@pytest.mark.parametrize("layout,msg", [
    ("missing", "data directory not found"),
    ("no_train", "has no train/ folder"),
    ("no_classes", "holds no class folders"),
    ("empty_class", "1 class folder(s)"),
])
def test_imagefolder_errors_are_one_line(tmp_path, layout, msg):
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
    if layout in ("no_classes", "empty_class"):
        (root / "train").mkdir()
    if layout == "empty_class":
        make_folder(tmp_path / "other")
        (root / "train" / "a").mkdir()
        Image.new("RGB", (8, 8)).save(root / "train" / "a" / "x.JPEG")
        (root / "train" / "b_empty").mkdir()
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")) as e:
        ImageFolder(root, img_size=8)
    assert "\n" not in str(e.value)
    if layout == "empty_class":
        assert "b_empty" in str(e.value)


def test_too_many_classes_for_the_model(tmp_path):
    make_folder(tmp_path, classes=("a", "b", "c"), per_class=1)
    with pytest.raises(ValueError, match="3 classes but model.num_classes is 2"):
        build_dataset(DataConfig(path=str(tmp_path)), img_size=8, num_classes=2)


@pytest.mark.slow
def test_digits_dataset_is_real_and_upscaled():
    ds = Digits(img_size=16, in_channels=3)
    assert len(ds) == 1797 and ds.classes == [str(i) for i in range(10)]
    img, label = ds[0]
    assert img.shape == (3, 16, 16) and img.dtype == torch.uint8
    assert torch.equal(img[0], img[2])  # grey repeated to 3 channels
    assert 0 <= label <= 9 and img.max() > 200 and img.min() < 30  # ink on a dark background
    counts = np.bincount(ds.labels, minlength=10)
    assert counts.min() > 170  # ~180 of each digit


# --------------------------------------------------------------------------- sampler

@pytest.mark.parametrize("n,world", [(10, 1), (10, 3), (17, 4), (8, 2)])
def test_sampler_matches_torch_distributed_sampler(n, world):
    for rank in range(world):
        ref = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=7)
        ref.set_epoch(3)
        ours = ResumableSampler(n, world, rank, seed=7, micro_batch=1, hflip=False)
        ours.set_epoch(3)
        assert [i for i, _ in ours] == list(ref)


def test_sampler_resume_is_the_suffix_and_ranks_cover_a_prefix():
    world, micro = 2, 3
    full = [ResumableSampler(50, world, r, seed=1, micro_batch=micro) for r in range(world)]
    for s in full:
        s.set_epoch(5)
    lists = [list(s) for s in full]
    for start in range(full[0].micro_per_epoch + 1):
        for r in range(world):
            s = ResumableSampler(50, world, r, seed=1, micro_batch=micro)
            s.set_epoch(5, start_micro=start)
            assert list(s) == lists[r][start * micro:]
    # the first m micro-batches of all ranks together are the first m*micro*world positions of the order
    perm, flips = full[0].order(5)
    m = 2
    got = sorted((i, f) for r in range(world) for i, f in lists[r][: m * micro])
    want = sorted((int(perm[p]), bool(flips[p])) for p in range(m * micro * world))
    assert got == want


def test_sampler_order_depends_on_seed_and_epoch_only():
    a = ResumableSampler(100, 1, 0, seed=0, micro_batch=4)
    b = ResumableSampler(100, 1, 0, seed=0, micro_batch=4)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)
    flips = [f for _, f in a]
    assert 20 < sum(flips) < 80  # about half flipped
    nf = ResumableSampler(100, 1, 0, seed=0, micro_batch=4, hflip=False)
    assert not any(f for _, f in nf)


def test_sampler_caps_micro_batches_and_rejects_tiny_data():
    s = ResumableSampler(100, 2, 1, seed=0, micro_batch=8, micro_per_epoch=4)
    assert len(s) == 32 and len(list(s)) == 32
    with pytest.raises(ValueError, match="less than one micro-batch"):
        ResumableSampler(5, 2, 0, seed=0, micro_batch=4)
    with pytest.raises(ValueError, match="start_micro"):
        s.set_epoch(0, start_micro=5)


def test_loader_yields_uint8_batches_in_sampler_order(tmp_path):
    make_folder(tmp_path, per_class=4)
    ds = ImageFolder(tmp_path, img_size=8)
    s = ResumableSampler(len(ds), 1, 0, seed=0, micro_batch=4)
    s.set_epoch(0)
    loader = build_loader(ds, s, DataConfig(path=str(tmp_path), num_workers=0), torch.device("cpu"), seed=0)
    batches = list(loader)
    assert len(batches) == 3 and batches[0][0].shape == (4, 3, 8, 8) and batches[0][0].dtype == torch.uint8
    assert [int(v) for b in batches for v in b[1]] == [ds.samples[i][1] for i, _ in s]


# --------------------------------------------------------------------------- fault injection hook

def test_worker_kill_threshold(monkeypatch):
    assert worker_kill_threshold(4, {}) is None
    assert worker_kill_threshold(4, {INJECT_ENV: "2"}) == 2
    assert worker_kill_threshold(1, {INJECT_ENV: "2"}) is None  # fewer workers: never fires
    assert worker_kill_threshold(0, {INJECT_ENV: "0"}) is None  # no worker process to kill
    with pytest.raises(ValueError, match="not an integer"):
        worker_kill_threshold(2, {INJECT_ENV: "two"})
    monkeypatch.delenv(INJECT_ENV, raising=False)
    ds = Digits(img_size=8)
    assert not arm_worker_kill(ds, 4, 8) and ds.kill_after_items is None
    monkeypatch.setenv(INJECT_ENV, "2")
    assert arm_worker_kill(ds, 2, 8) and ds.kill_after_items == 16
    assert ds[(0, False)][0].shape == (3, 8, 8)  # the main process never kills itself


# --------------------------------------------------------------------------- hostile folders and files

def test_link_loops_are_walked_once_and_agree_with_inspect(tmp_path):
    """ln -s . train/c0/loop and ln -s .. train/c1/up: no image is read twice or under another label."""
    import os

    from jitplan.dataset.inspect import inspect_dataset

    make_folder(tmp_path, classes=("c0", "c1"), per_class=3)
    os.symlink(".", tmp_path / "train" / "c0" / "loop")
    os.symlink("..", tmp_path / "train" / "c1" / "up")
    ds = ImageFolder(tmp_path, img_size=8)
    assert len(ds) == 6 and [label for _, label in ds.samples] == [0, 0, 0, 1, 1, 1]
    assert len({os.path.realpath(p) for p, _ in ds.samples}) == 6
    rep = inspect_dataset(tmp_path)
    assert (rep.classes, rep.images, rep.class_names) == (2, 6, ds.classes)
    assert sorted(rep.links_skipped) == ["c0/loop", "c1/up"]


@pytest.mark.parametrize("kind,words", [
    ("self_loop", "broken or looping link"),
    ("class_is_root", "links back into the dataset"),
    ("unreadable", "is unreadable (Permission denied)"),
])
def test_broken_class_folders_are_named_in_one_line(tmp_path, monkeypatch, kind, words):
    import os

    make_folder(tmp_path, classes=("c0", "c1"), per_class=2)
    train = tmp_path / "train"
    if kind == "self_loop":
        os.symlink("zz", train / "zz")
    elif kind == "class_is_root":
        os.symlink(".", train / "c2")
    else:
        real = os.scandir

        def scandir(p="."):
            if str(p).endswith("c1"):
                raise PermissionError(13, "Permission denied", str(p))
            return real(p)
        monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")) as e:
        ImageFolder(tmp_path, img_size=8)
    assert "\n" not in str(e.value)
    from jitplan.dataset.inspect import inspect_dataset

    assert any(words in p for p in inspect_dataset(tmp_path).problems)


def _bad_files(train):
    (train / "c0" / "zero.png").write_bytes(b"")
    (train / "c1" / "text.png").write_text("hello")
    good = (train / "c0" / "img0.png").read_bytes()
    (train / "c1" / "trunc.png").write_bytes(good[: len(good) // 2])


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_image_is_one_line_badimage_even_from_a_worker(tmp_path, workers):
    from jitmodel.data import BadImage, close_loader

    make_folder(tmp_path, classes=("c0", "c1"), per_class=3)
    _bad_files(tmp_path / "train")
    ds = ImageFolder(tmp_path, img_size=8)
    s = ResumableSampler(len(ds), 1, 0, seed=0, micro_batch=9, hflip=False)
    s.set_epoch(0)
    loader = build_loader(ds, s, DataConfig(path=str(tmp_path), num_workers=workers), torch.device("cpu"), seed=0)
    with pytest.raises(BadImage) as e:
        list(loader)
    line = e.value.one_line()
    assert line.startswith("cannot decode ") and "jitplan data verify" in line and "\n" not in line
    close_loader(loader)


def test_manifest_refuses_bad_files_or_skips_them_with_a_note(tmp_path):
    from jitmodel.manifest import MANIFEST_NAME, build_manifest, write_manifest

    make_folder(tmp_path, classes=("c0", "c1"), per_class=3)
    _bad_files(tmp_path / "train")
    write_manifest(tmp_path / MANIFEST_NAME, build_manifest(tmp_path / "train", workers=1))
    with pytest.raises(ValueError, match=r"^3 image\(s\) in .* do not decode, e\.g\. c0/zero\.png") as e:
        ImageFolder(tmp_path, img_size=8)
    assert "skip_bad" in str(e.value)
    ds = build_dataset(DataConfig(path=str(tmp_path), skip_bad=True), img_size=8)
    assert len(ds) == 6 and "skipped 3 bad image(s)" in ds.note
    (tmp_path / MANIFEST_NAME).unlink()  # skip_bad with no manifest decodes what is not vouched for
    ds = build_dataset(DataConfig(path=str(tmp_path), skip_bad=True), img_size=8)
    assert len(ds) == 6 and "decoded 9 image(s)" in ds.note
