"""Issue 22's data cases, from the outside: datasets are what they say, bounds before work, no tracebacks.

Each test failed on the code before it (see the commit messages): links out of the dataset were followed,
verify passed folders the trainer refused, /dev/zero as a manifest grew without end, 500 decoding processes
were started, a huge PNG was decoded whole, a flooding or hanging ``--python`` held doctor, the JiT-Tiny
4096 px digits run allocated until it was killed, a 4,000-character path gave a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from jitmodel import bounds
from jitmodel import manifest as mf
from jitmodel.bounded_io import read_regular, run_bounded
from jitmodel.data import ImageFolder
from jitmodel.scan import scan_classes
from jitplan.dataset.inspect import inspect_dataset
from jitplan.dataset.verify import verify_dataset
from jitplan.errors import UsageError

DATA = Path(__file__).parent / "data"
GIB = 2**30


def tree(root: Path, classes: dict[str, int]) -> Path:
    for c, n in classes.items():
        (root / "train" / c).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i * 20 % 255, 0, 0)).save(root / "train" / c / f"{i}.png")
    return root


def outside_images(root: Path, n: int) -> Path:
    """A folder of real images that is not part of the dataset (stands in for /usr's icons)."""
    root.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (8, 8)).save(root / f"icon{i}.png")
    return root


# ---------------------------------------------------------------------------------------------- links

def test_a_folder_link_leaving_the_dataset_is_never_followed_and_every_consumer_agrees(tmp_path):
    ds = tree(tmp_path / "ds", {"c0": 12, "c1": 12})
    icons = outside_images(tmp_path / "usr", 40)
    os.symlink(icons, ds / "train" / "c1" / "usr")  # c1/usr -> /usr, as in the issue
    scan = scan_classes(ds / "train")
    assert scan.images == 24 and scan.links_outside == [f"c1/usr -> {icons}"]
    for skip_bad in (False, True):  # whatever skip_bad says
        assert len(ImageFolder(ds, 8, skip_bad=skip_bad)) == 24
    folder = ImageFolder(ds, 8)
    assert folder.note is not None and "c1/usr" in folder.note and "not followed" in folder.note
    res = verify_dataset(ds, workers=1)
    assert res.images == 24 and any("c1/usr" in n for n in res.notes)
    assert inspect_dataset(ds, sample_sizes=0).images == 24
    from jitplan.doctor.runner import run_doctor
    from jitplan.hardware.nvml_fake import FakeNvml

    nvml = FakeNvml.from_file(DATA / "nvml" / "no_driver.yaml")
    f = run_doctor(data_path=ds, run_torch=False, nvml=nvml).by_id("C10")
    assert f.level == "warn" and "24 images" in f.found and "c1/usr" in f.found


def test_a_link_to_the_filesystem_root_is_named_not_walked(tmp_path):
    ds = tree(tmp_path / "ds", {"c0": 3, "c1": 3})
    os.symlink("/", ds / "train" / "c0" / "slash")
    t0 = time.perf_counter()
    scan = scan_classes(ds / "train")
    assert time.perf_counter() - t0 < 5  # not a walk of the whole filesystem
    assert scan.links_outside == ["c0/slash -> /"] and not scan.unreadable and scan.images == 6
    assert scan.refusal() is None  # nothing about /proc: the link is named, the dataset is fine


def test_links_inside_the_dataset_are_followed_once_and_loops_end(tmp_path):
    ds = tree(tmp_path / "ds", {"c0": 2, "c1": 2})
    sub = ds / "train" / "c0" / "more"
    sub.mkdir()
    Image.new("RGB", (8, 8)).save(sub / "x.png")
    os.symlink("more", ds / "train" / "c0" / "alias")  # inside the dataset: the same folder, walked once
    os.symlink(".", ds / "train" / "c1" / "loop")  # a loop
    os.symlink("../c0/more", ds / "train" / "c1" / "borrowed")  # into another class: already walked
    a, b = ds / "train" / "c1" / "ab", ds / "train" / "c1" / "ba"
    os.symlink("ba", a)
    os.symlink("ab", b)  # a link loop that cannot be resolved
    scan = scan_classes(ds / "train")
    assert [len(c.images) for c in scan.class_list] == [3, 2] and not scan.links_outside
    assert sorted(scan.links_skipped) == ["c0/alias", "c1/borrowed", "c1/loop"] and scan.broken_links == 2
    assert "c0/more/x.png" in scan.class_list[0].images  # the real folder, not the link, names the image


def test_verify_refuses_empty_class_folders_with_the_trainers_words(tmp_path):
    ds = tree(tmp_path / "ds", {"c0": 2})
    for i in range(300):
        (ds / "train" / f"empty{i:04d}").mkdir()
    with pytest.raises(ValueError) as trainer:
        ImageFolder(ds, 8)
    with pytest.raises(UsageError) as verify:
        verify_dataset(ds, workers=1)
    assert verify.value.message == str(trainer.value)
    assert "300 class folder(s)" in str(trainer.value) and "hold no images" in str(trainer.value)


# ---------------------------------------------------------------------------------------------- names

def test_non_utf8_names_are_printable_everywhere(tmp_path):
    ds = tree(tmp_path / "ds", {"c0": 2})
    bad = os.fsdecode(b"\xff\xfe.png")
    (ds / "train" / "c0" / bad).write_bytes(b"junk")
    res = verify_dataset(ds, workers=1)
    assert res.bad and res.bad[0].startswith("c0/\\xff\\xfe.png")
    res.model_dump_json().encode("utf-8")  # strict: no lone surrogate left
    folder = ImageFolder(ds, 8, skip_bad=True)
    assert folder.note is not None and "\\xff" in folder.note
    folder.note.encode("utf-8")  # the trainer writes it to train.log


# ---------------------------------------------------------------------------------------------- bounds

def test_dev_zero_as_a_manifest_is_refused_before_reading(tmp_path):
    with pytest.raises(ValueError, match="not a regular file .a character device."):
        mf.load_manifest("/dev/zero")  # refused by its kind: /dev/zero never reaches a read


def test_a_fifo_or_an_oversized_manifest_is_refused(tmp_path):
    fifo = tmp_path / "m.fifo"
    os.mkfifo(fifo)
    code = (f"from jitmodel.manifest import load_manifest\ntry:\n    load_manifest({str(fifo)!r})\n"
            "except ValueError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert "a FIFO" in out.stdout  # no blocking open
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(mf.MAX_MANIFEST_BYTES + 1)  # sparse: no disk used
    with pytest.raises(ValueError, match="larger than the 1,073,741,824-byte limit"):
        mf.load_manifest(big)


def test_kernel_files_look_regular_but_are_refused_unread():
    with pytest.raises(ValueError, match="kernel file"):
        read_regular("/proc/self/status", 1 << 20, "config")


def test_verify_workers_are_capped_by_cpus(tmp_path):
    ds = tree(tmp_path / "ds", {"c0": 2})
    assert verify_dataset(ds, workers=500).workers <= bounds.usable_cpus()
    assert mf.decode_workers(500, chunks=1000) == bounds.usable_cpus()


def test_a_huge_image_is_refused_from_its_header(tmp_path):
    p = tmp_path / "huge.png"
    Image.new("1", (12000, 12000)).save(p)  # 144 MP: 1.9 GB of RSS when decoded to RGB before
    why = mf.decode_error(p)
    assert why is not None and "12000x12000" in why and "50,000,000-pixel limit" in why
    ds = tree(tmp_path / "ds", {"c0": 1})
    os.replace(p, ds / "train" / "c0" / "huge.png")
    folder = ImageFolder(ds, 8, skip_bad=True)  # decodes what no manifest vouches for: the huge one is bad
    assert len(folder) == 1 and "huge.png" in (folder.note or "")


def test_start_memory_refuses_jit_tiny_at_4096_before_allocating(monkeypatch):
    from jitmodel.config import DataConfig, ModelConfig, TrainConfig

    cfg = TrainConfig(model=ModelConfig(variant="JiT-Tiny/4", img_size=4096, num_classes=10),
                      data=DataConfig(kind="digits", num_workers=0), batch_per_gpu=2)
    monkeypatch.setattr(bounds, "host_free_bytes", lambda root="/": 8 * GIB)
    with pytest.raises(ValueError) as e:
        bounds.check_start(cfg, 1, "cpu")
    msg = str(e.value)
    assert "JiT-Tiny/4 at 4096 px" in msg and "dataset 120.6 GB" in msg and "8.6 GB is free" in msg
    small = cfg.model_copy(update={"model": ModelConfig(variant="JiT-Tiny/4", img_size=32, num_classes=10)})
    bounds.check_start(small, 1, "cpu")  # the demo's size fits
    from jitmodel.data import build_dataset

    with pytest.raises(ValueError, match="the digits dataset at 4096 px takes"):
        build_dataset(cfg.data, 4096, 3, 10)  # the dataset alone refuses, before a byte is allocated


def test_doctor_C8_fails_the_4096_config_with_the_numbers(tmp_path):
    from jitplan.doctor.runner import run_doctor
    from jitplan.hardware.host import HostPaths
    from jitplan.hardware.nvml_fake import FakeNvml

    cfg = tmp_path / "t.yaml"
    cfg.write_text("kind: train\nmodel: {variant: JiT-Tiny/4, img_size: 4096, num_classes: 10}\n"
                   "data: {kind: digits, num_workers: 0}\nbatch_per_gpu: 2\n")
    rep = run_doctor(plan_path=cfg, run_torch=False, nvml=FakeNvml.from_file(DATA / "nvml" / "no_driver.yaml"),
                     paths=HostPaths.under(DATA / "cgroup" / "v2_24g"), host_kwargs={"host_ram_bytes": 256 * GIB})
    f = rep.by_id("C8")
    assert f.level == "fail" and "held at start" in f.found and "dataset 120.6 GB" in f.found
    assert "img_size" in (f.fix or "")


# ---------------------------------------------------------------------------------------------- children

FLOOD = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"


def test_a_flooding_child_is_stopped_with_bounded_memory():
    t0 = time.perf_counter()
    r = run_bounded([sys.executable, "-c", FLOOD], timeout=60)
    assert time.perf_counter() - t0 < 30
    assert len(r.stdout) <= 256 * 1024 and "more than 64 MiB" in r.stderr


def test_doctor_import_probe_of_a_flooding_python_is_bounded(tmp_path):
    from jitplan.hardware.software import torch_import_check

    flood = tmp_path / "python"
    flood.write_text(f"#!{sys.executable}\n{FLOOD}")
    flood.chmod(0o755)
    t0 = time.perf_counter()
    imp = torch_import_check(str(flood), timeout=60)
    assert not imp.ok and "more than 64 MiB" in (imp.error or "")
    assert time.perf_counter() - t0 < 30
    from types import SimpleNamespace

    from jitplan.doctor.checks_torch import check_torch_import

    meta = SimpleNamespace(installed=True, installer="pip", packages={}, location=None, version="2.13")
    f = check_torch_import(SimpleNamespace(probe=SimpleNamespace(torch=meta), torch_import=imp, env={}))
    assert f.level == "fail" and "must name a Python interpreter" in (f.fix or "")


def test_doctor_import_probe_stops_at_its_timeout_and_says_why(tmp_path, cli):
    hang = tmp_path / "python"
    hang.write_text("#!/bin/sh\nsleep 100 &\nsleep 100\n")  # a grandchild holds the pipes too
    hang.chmod(0o755)
    t0 = time.perf_counter()
    r = cli("doctor", "--python", str(hang), "--import-timeout", "2", "--no-cache", "--json",
            "--replay-nvml", str(DATA / "nvml" / "no_driver.yaml"))
    assert time.perf_counter() - t0 < 45
    c1 = next(f for f in json.loads(r.out)["findings"] if f["id"] == "C1")
    assert c1["level"] == "fail" and "within 2 s" in c1["found"] and "healthy import takes" in c1["found"]


# ---------------------------------------------------------------------------------------------- paths

def test_a_4000_character_data_path_is_one_line_exit_2(cli, tmp_path):
    long = str(tmp_path / ("x" * 4000))
    r = cli("doctor", "--data", long)
    assert r.code == 2 and "Traceback" not in r.err and "no such folder" in r.err
    assert len(r.err) < 600  # the path is shortened, not printed whole
    plan = tmp_path / "long.yaml"  # the same path from a plan: C10 says it, no traceback
    plan.write_text(f"kind: train\nmodel: {{variant: JiT-Tiny/4, img_size: 32}}\ndata: {{path: {long}}}\n")
    from jitplan.doctor.runner import run_doctor
    from jitplan.hardware.nvml_fake import FakeNvml

    rep = run_doctor(plan_path=plan, run_torch=False, nvml=FakeNvml.from_file(DATA / "nvml" / "no_driver.yaml"))
    assert rep.by_id("C10").level == "fail" and "does not exist" in rep.by_id("C10").found
    with pytest.raises(UsageError):
        verify_dataset(long)
    with pytest.raises(UsageError):
        inspect_dataset(long)
    with pytest.raises(ValueError, match="data directory not found"):
        ImageFolder(long, 8)


# ---------------------------------------------------------------------------------------------- hooks

def test_the_trainer_checks_its_memory_floor_before_allocating(tmp_path, monkeypatch, capsys):
    """HOOK in jitmodel/train.py: Trainer.__init__ calls bounds.check_start before it builds anything."""
    from jitmodel import train

    cfg = tmp_path / "t.yaml"
    cfg.write_text("kind: train\nmodel: {variant: JiT-Tiny/4, img_size: 1024, num_classes: 10}\n"
                   f"data: {{kind: digits, num_workers: 0}}\nbatch_per_gpu: 2\noutput_dir: {tmp_path / 'out'}\n")
    monkeypatch.setattr(bounds, "host_free_bytes", lambda root="/": 4 * GIB)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(k, raising=False)
    assert train.main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "needs at least" in err and "host memory at start" in err and "4.3 GB is free" in err


@pytest.mark.skipif(not os.path.exists("/proc/kmsg"), reason="no /proc/kmsg here")
def test_a_config_whose_read_blocks_is_refused_unread(tmp_path):
    """HOOK in jitmodel/safeyaml.py: configs are read through bounded_io.read_regular. /proc/kmsg is a
    'regular' file of size 0 whose read blocks until the kernel logs; it is refused before it is opened."""
    code = ("from jitmodel.config import read_yaml_mapping\ntry:\n    read_yaml_mapping('/proc/kmsg')\n"
            "except ValueError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert "kernel file" in out.stdout, out.stdout + out.stderr


def test_doctor_checkpoint_digests_with_a_flooding_python_are_bounded(tmp_path):
    """HOOK in jitplan/doctor/ckpt.py: verify_digests runs its child through run_bounded."""
    from jitplan.doctor.ckpt import verify_digests

    flood = tmp_path / "python"
    flood.write_text(f"#!{sys.executable}\n{FLOOD}")
    flood.chmod(0o755)
    t0 = time.perf_counter()
    with pytest.raises(UsageError) as e:
        verify_digests(tmp_path / "x.pt", python=str(flood), timeout=120)
    assert time.perf_counter() - t0 < 30 and len(e.value.message) < 600


def test_the_gpu_floor_is_checked_against_the_gpus_free_memory(monkeypatch):
    """No GPU here: torch.cuda.mem_get_info answers as a busy 80 GB card with 2 GiB free would."""
    import torch

    from jitmodel.config import DataConfig, ModelConfig, TrainConfig

    cfg = TrainConfig(model=ModelConfig(variant="JiT-B/16", img_size=256), batch_per_gpu=128,
                      data=DataConfig(path="/data"))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * GIB, 80 * GIB))
    with pytest.raises(ValueError, match=r"needs at least 2\d\.\d GB of GPU memory at start .* 2\.1 GB is free"):
        bounds.check_start(cfg, 1, torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (79 * GIB, 80 * GIB))
    bounds.check_start(cfg, 1, torch.device("cuda", 0))  # an idle H100 takes it


def test_data_prepare_counts_what_the_scanner_counts_with_a_link_out(tmp_path):
    from jitplan.dataset.prepare import prepare_dataset

    src = tmp_path / "flat"
    for c in ("c0", "c1"):
        (src / c).mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (8, 8)).save(src / c / f"{i}.png")
    os.symlink(outside_images(tmp_path / "usr", 40), src / "c1" / "usr")
    res = prepare_dataset(src, tmp_path / "dst", val_per_class=2)
    assert res.train_images + res.val_images == 24 == scan_classes(src).images
    assert scan_classes(tmp_path / "dst" / "train").images == res.train_images == 20  # file links: followed
