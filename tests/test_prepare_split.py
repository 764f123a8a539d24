"""``data prepare`` states its split and holds out at most a tenth of a small class (issue 23: a dataset of
20 images per class silently lost 10 of each to val)."""

from __future__ import annotations

from PIL import Image

from jitplan.dataset.prepare import prepare_dataset


def _flat(root, per_class: int, classes=("n01", "n02")):
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(root / c / f"{i}.png")
    return root


def test_small_classes_keep_nine_tenths_for_training(tmp_path):
    r = prepare_dataset(_flat(tmp_path / "src", 20), tmp_path / "dst")
    assert (r.train_images, r.val_images) == (36, 4)  # 2 of 20 per class (was 10 of 20)
    assert "at most a tenth of a class" in r.split
    big = prepare_dataset(_flat(tmp_path / "big", 150), tmp_path / "dst2")
    assert big.val_images == 20  # 10 per class once a class has 100 or more
    tiny = prepare_dataset(_flat(tmp_path / "tiny", 6), tmp_path / "dst3")
    assert (tiny.train_images, tiny.val_images) == (12, 0)


def test_the_cli_states_the_split(cli, tmp_path):
    r = cli("data", "prepare", str(_flat(tmp_path / "src", 20)), str(tmp_path / "dst"))
    assert r.code == 0, r.err
    text = " ".join(r.out.split())
    assert "36 train / 4 val images" in text and "val: 10 images per class, at most a tenth of a class" in text
    r = cli("data", "prepare", str(tmp_path / "src"), str(tmp_path / "dst4"), "--val-per-class", "5")
    assert "val: 5 image(s) per class (--val-per-class)" in " ".join(r.out.split())


def test_prepare_counts_what_the_trainer_scans(tmp_path):
    """One reader of a dataset: images in a class's sub-folder, a link out of the dataset and hidden
    folders are counted by prepare as the trainer's scan counts them (jitmodel.scan)."""
    from jitmodel.scan import scan_classes

    src = tmp_path / "flat"
    _flat(src, 20)
    (src / "n01" / "more").mkdir()
    Image.new("RGB", (8, 8)).save(src / "n01" / "more" / "extra.png")
    (src / "n02" / "usr").symlink_to("/usr")  # leaves the dataset: never followed
    r = prepare_dataset(src, tmp_path / "out", val_per_class=2, seed=0)
    scan = scan_classes(src)
    assert r.train_images + r.val_images == scan.images == 41
    out = tmp_path / "out"
    assert (out / "train" / "n01" / "more").is_dir() or (out / "val" / "n01" / "more").is_dir()
