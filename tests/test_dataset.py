"""jitplan data inspect / prepare on planted dataset trees of each layout (tiny real PNGs)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from jitplan.dataset.inspect import inspect_dataset
from jitplan.dataset.prepare import prepare_dataset, split_class
from jitplan.errors import UsageError

WNIDS = ["n01440764", "n01443537", "n01484850"]


def _png(p: Path, size: int = 8, color: int = 0) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (color, 0, 0)).save(p)


def make_flat(root: Path, classes=WNIDS, per_class: int = 6, size: int = 8) -> Path:
    for ci, c in enumerate(classes):
        for i in range(per_class):
            _png(root / c / f"img_{i:03d}.png", size, ci * 40)
    return root


def make_ilsvrc(root: Path, per_class: int = 4) -> Path:
    make_flat(root / "train", per_class=per_class)
    lines = ["ImageId,PredictionString"]
    for i in range(6):
        wnid = WNIDS[i % 3]
        _png(root / "val" / f"ILSVRC2012_val_{i + 1:08d}.png")
        lines.append(f"ILSVRC2012_val_{i + 1:08d},{wnid} 1 2 30 40 {wnid} 3 4 50 60")
    (root / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    return root


# ---------------------------------------------------------------------------------------------- inspect

def test_inspect_flat_layout_counts_classes_images_sizes(tmp_path):
    make_flat(tmp_path / "in256", per_class=5, size=16)
    (tmp_path / "in256" / WNIDS[0] / "notes.txt").write_text("x")
    r = inspect_dataset(tmp_path / "in256")
    assert r.layout == "flat"
    assert (r.classes, r.images, r.per_class_min, r.per_class_max) == (3, 15, 5, 5)
    assert r.wnid_fraction == 1.0 and r.class_names == WNIDS
    assert r.extensions == {".png": 15} and r.other_files == 1
    assert r.sizes == {"16x16": 3}


def test_inspect_imagefolder_with_val_and_hidden_and_empty_classes(tmp_path):
    root = tmp_path / "ds"
    make_flat(root / "train", per_class=3)
    make_flat(root / "val", per_class=1)
    (root / "train" / ".ipynb_checkpoints").mkdir()
    (root / "train" / "n09999999").mkdir()
    r = inspect_dataset(root)
    assert r.layout == "imagefolder" and r.val_layout == "classes" and r.val_images == 3
    assert r.hidden_dirs == [".ipynb_checkpoints"]
    assert sorted(r.empty_classes) == [".ipynb_checkpoints", "n09999999"]
    assert r.classes == 5  # what ImageFolder / jitmodel.data would count


def test_inspect_ilsvrc_flat_val_finds_ground_truth(tmp_path):
    r = inspect_dataset(make_ilsvrc(tmp_path / "ilsvrc"))
    assert r.layout == "ilsvrc" and r.val_layout == "flat" and r.val_images == 6
    assert r.val_labels and r.val_labels.endswith("LOC_val_solution.csv")


def test_inspect_kaggle_nested_cls_loc(tmp_path):
    make_ilsvrc(tmp_path / "kaggle" / "ILSVRC" / "Data" / "CLS-LOC")
    r = inspect_dataset(tmp_path / "kaggle")
    assert r.layout == "ilsvrc" and r.classes == 3


def test_inspect_non_wnid_names_noted(tmp_path):
    make_flat(tmp_path / "d", classes=["cat", "dog"], per_class=2)
    r = inspect_dataset(tmp_path / "d")
    assert r.wnid_fraction == 0.0 and any("wnids" in n for n in r.notes)


def test_inspect_empty_and_unknown(tmp_path):
    (tmp_path / "empty").mkdir()
    assert inspect_dataset(tmp_path / "empty").layout == "empty"
    _png(tmp_path / "loose" / "a.png")
    r = inspect_dataset(tmp_path / "loose")
    assert r.layout == "unknown" and "1 images directly" in r.notes[0]


def test_inspect_cli_json_and_bad_path(cli, tmp_path):
    make_flat(tmp_path / "d")
    r = cli("data", "inspect", str(tmp_path / "d"), "--json")
    assert r.code == 0 and json.loads(r.out)["layout"] == "flat"
    r = cli("data", "inspect", str(tmp_path / "nope"))
    assert r.code == 2 and r.err.startswith("Error: dataset path does not exist") and "Traceback" not in r.err


# ---------------------------------------------------------------------------------------------- prepare

def test_split_is_deterministic_and_seed_dependent():
    files = [f"{i}.png" for i in range(50)]
    a = split_class(files, 5, 0, "n01")
    assert a == split_class(list(reversed(files)), 5, 0, "n01")
    assert a[1] != split_class(files, 5, 1, "n01")[1]
    assert sorted(a[0] + a[1]) == sorted(files) and len(a[1]) == 5


def test_prepare_flat_symlinks_split_classes_json_idempotent(tmp_path):
    src = make_flat(tmp_path / "kaggle256", per_class=6)
    (src / ".ipynb_checkpoints").mkdir()
    _png(src / ".ipynb_checkpoints" / "x.png")
    dst = tmp_path / "in256"
    r = prepare_dataset(src, dst, val_per_class=2, seed=3)
    assert (r.classes, r.train_images, r.val_images, r.created, r.already) == (3, 12, 6, 18, 0)
    assert json.loads((dst / "classes.json").read_text()) == WNIDS
    assert not (dst / "train" / ".ipynb_checkpoints").exists()
    link = next((dst / "val" / WNIDS[0]).iterdir())
    assert link.is_symlink() and Path(os.readlink(link)).parent == (src / WNIDS[0]).resolve()
    val_before = sorted(p.name for p in (dst / "val" / WNIDS[1]).iterdir())
    again = prepare_dataset(src, dst, val_per_class=2, seed=3)
    assert (again.created, again.already) == (0, 18)
    assert sorted(p.name for p in (dst / "val" / WNIDS[1]).iterdir()) == val_before
    # the prepared folder is now a proper imagefolder
    assert inspect_dataset(dst).layout == "imagefolder"


def test_prepare_refuses_to_overwrite_a_different_file(cli, tmp_path):
    src = make_flat(tmp_path / "src", per_class=4)
    dst = tmp_path / "dst"
    target = dst / "train" / WNIDS[0] / "img_000.png"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"someone else's file")
    with pytest.raises(UsageError, match="refusing to overwrite"):
        prepare_dataset(src, dst, val_per_class=0)
    assert target.read_bytes() == b"someone else's file"
    assert not (dst / "classes.json").exists()  # conflicts are found before anything is written
    r = cli("data", "prepare", str(src), str(dst), "--val-per-class", "0")
    assert r.code == 2 and "refusing to overwrite" in r.err


def test_prepare_seed_change_conflicts_instead_of_mixing_splits(tmp_path):
    src = make_flat(tmp_path / "src", per_class=6)
    dst = tmp_path / "dst"
    prepare_dataset(src, dst, val_per_class=2, seed=0)
    with pytest.raises(UsageError):
        # a different split would put some images in both train/ and val/: refuse, do not mix
        prepare_dataset(src, dst, val_per_class=3, seed=0)


def test_prepare_copy_and_fraction(tmp_path):
    src = make_flat(tmp_path / "src", per_class=10)
    r = prepare_dataset(src, tmp_path / "dst", copy=True, val_fraction=0.2)
    assert (r.train_images, r.val_images, r.mode) == (24, 6, "copy")
    f = next((tmp_path / "dst" / "train" / WNIDS[2]).iterdir())
    assert f.is_file() and not f.is_symlink()
    assert prepare_dataset(src, tmp_path / "dst", copy=True, val_fraction=0.2).created == 0


def test_prepare_ilsvrc_val_from_ground_truth(tmp_path):
    src = make_ilsvrc(tmp_path / "ilsvrc")
    r = prepare_dataset(src, tmp_path / "out")
    assert (r.layout, r.train_images, r.val_images) == ("ilsvrc", 12, 6)
    assert sorted(p.name for p in (tmp_path / "out" / "val" / WNIDS[1]).iterdir()) == [
        "ILSVRC2012_val_00000002.png", "ILSVRC2012_val_00000005.png"]


def test_prepare_ilsvrc_without_labels_is_usage_error(tmp_path):
    src = make_ilsvrc(tmp_path / "ilsvrc")
    (src / "LOC_val_solution.csv").unlink()
    with pytest.raises(UsageError, match="--val-labels"):
        prepare_dataset(src, tmp_path / "out")


def test_prepare_verify_reports_corrupt_images_exit_1(cli, tmp_path):
    src = make_flat(tmp_path / "src", per_class=3)
    (src / WNIDS[1] / "img_001.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    r = cli("data", "prepare", str(src), str(tmp_path / "dst"), "--val-per-class", "1", "--verify", "--json")
    assert r.code == 1
    out = json.loads(r.out)
    assert out["verified"] == 9 and len(out["bad_images"]) == 1 and "img_001.png" in out["bad_images"][0]
    assert "1 of 9 images failed to decode" in r.err


@pytest.mark.parametrize("args, msg", [
    (["--val-per-class", "1", "--val-fraction", "0.1"], "not both"),
    (["--val-fraction", "1.5"], "--val-fraction must be in"),
    (["--val-per-class", "6"], "cannot hold out 6"),
])
def test_prepare_bad_options_exit_2(cli, tmp_path, args, msg):
    src = make_flat(tmp_path / "src", per_class=6)
    r = cli("data", "prepare", str(src), str(tmp_path / "dst"), *args)
    assert r.code == 2 and msg in r.err and "Traceback" not in r.err


def test_prepare_dst_inside_src_and_already_prepared(cli, tmp_path):
    src = make_flat(tmp_path / "src")
    r = cli("data", "prepare", str(src), str(src / "out"))
    assert r.code == 2 and "inside SRC" in r.err
    done = tmp_path / "done"
    make_flat(done / "train")
    r = cli("data", "prepare", str(done), str(tmp_path / "x"))
    assert r.code == 2 and "already has train/" in r.err


# ---------------------------------------------------------------------------------------------- verify

def test_verify_writes_a_manifest_cached_by_size_and_mtime(cli, tmp_path):
    import os

    make_flat(tmp_path / "d" / "train", per_class=3)
    bad = tmp_path / "d" / "train" / WNIDS[1] / "zero.png"
    bad.write_bytes(b"")
    r = cli("data", "verify", str(tmp_path / "d"), "--json", "--workers", "1")
    assert r.code == 1 and r.err.count("\nError:") == 1 and "1 of 10 images do not decode" in r.err
    res = json.loads(r.out)
    assert res["decoded"] == 10 and res["bad"][0].startswith(f"{WNIDS[1]}/zero.png: ")
    assert Path(res["manifest"]) == tmp_path / "d" / "jitmodel-manifest.json"
    bad.unlink()
    ok = tmp_path / "d" / "train" / WNIDS[0] / "img_000.png"
    os.utime(ok, ns=(1, 1))  # changed mtime: decoded again
    r = cli("data", "verify", str(tmp_path / "d"), "--json", "--workers", "1")
    assert r.code == 0 and json.loads(r.out)["decoded"] == 1 and json.loads(r.out)["bad"] == []


def test_verify_and_doctor_name_an_unreadable_or_missing_train(cli, tmp_path):
    import os

    make_flat(tmp_path / "d" / "train", per_class=1)
    os.symlink("loop", tmp_path / "d" / "train" / "loop")
    r = cli("data", "verify", str(tmp_path / "d"))
    assert r.code == 2 and "broken or looping link" in r.err and "Traceback" not in r.err
    r = cli("data", "verify", str(tmp_path))
    assert r.code == 2 and "has no train/ folder" in r.err
