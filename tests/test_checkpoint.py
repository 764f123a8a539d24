"""jitmodel.checkpoint: atomic writes, rotation, safe loading (ours and official), shape inference."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from jitmodel import checkpoint as C
from jitmodel.config import ModelConfig
from jitmodel.model import build_model
from jitmodel.variants import VARIANTS

TINY = ModelConfig(variant="JiT-Tiny/4", img_size=8, num_classes=10)


def _shapes(mc: ModelConfig, prefix: str = "net.") -> dict[str, tuple[int, ...]]:
    net = build_model(mc, device="meta")
    return {prefix + k: tuple(v.shape) for k, v in net.state_dict().items()}


# --------------------------------------------------------------------------- inference from shapes

@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.slow
def test_infer_model_config_over_the_registry(name):
    v = VARIANTS[name]
    img = v.patch * (2 if v.test_only else 16)
    mc = ModelConfig(variant=name, img_size=img, num_classes=7 if v.test_only else 1000)
    got = C.infer_model_config(_shapes(mc))
    assert (got.variant, got.img_size, got.num_classes, got.in_channels) == (name, img, mc.num_classes, 3)


def test_infer_tells_same_size_variants_apart():
    # B/16 at 256 and B/32 at 512 share pos_embed (1, 256, 768); the patch conv tells them apart.
    a = C.infer_model_config(_shapes(ModelConfig(variant="JiT-B/16", img_size=256)))
    b = C.infer_model_config(_shapes(ModelConfig(variant="JiT-B/32", img_size=512)))
    assert (a.variant, a.img_size) == ("JiT-B/16", 256) and (b.variant, b.img_size) == ("JiT-B/32", 512)
    big = C.infer_model_config(_shapes(ModelConfig(variant="JiT-B/16", img_size=512), prefix=""))
    assert big.img_size == 512  # the pos_embed (1, 1024, 768) of issue-style mismatches


def test_infer_rejects_foreign_shapes():
    s = _shapes(ModelConfig(variant="JiT-B/16"))
    s["net.x_embedder.proj1.weight"] = (100, 3, 16, 16)
    with pytest.raises(ValueError, match="no known JiT variant has .*bottleneck 100"):
        C.infer_model_config(s)
    with pytest.raises(ValueError, match="not a JiT state dict"):
        C.infer_model_config({"conv.weight": (3, 3)})


def test_mismatch_message_names_both_configs():
    with pytest.raises(ValueError) as e:
        C.check_compatible(ModelConfig(variant="JiT-B/16"), ModelConfig(variant="JiT-L/16"))
    assert str(e.value) == ("checkpoint is JiT-B/16 at 256px (1000 classes); "
                            "config asks for JiT-L/16 at 256px (1000 classes)")
    with pytest.raises(ValueError, match="at 256px .* at 512px"):
        C.check_compatible(ModelConfig(variant="JiT-B/16"), ModelConfig(variant="JiT-B/16", img_size=512))
    C.check_compatible(ModelConfig(variant="JiT-B/16"), ModelConfig(variant="JiT-B/16", attention="sdpa"))


# --------------------------------------------------------------------------- writing

def _ours(step: int, value: float = 0.0) -> dict:
    # no model_config: the semantic checks would (rightly) refuse a "w" that JiT-Tiny/4 does not have
    return {"format": C.FORMAT, "format_version": 1, "step": step, "model": {"w": torch.full((3,), value)}}


def test_save_rotates_and_links(tmp_path):
    for step in (1, 2, 3, 4):
        C.save_checkpoint(_ours(step, step), tmp_path, keep_last=2, permanent_epoch=1 if step == 2 else None)
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == ["0000003.pt", "0000004.pt", "epoch-0001.pt"]
    assert C.load_checkpoint(tmp_path / "last.pt")["step"] == 4
    assert C.load_checkpoint(tmp_path / "ckpt" / "epoch-0001.pt")["model"]["w"][0] == 2  # survived pruning
    assert not list(tmp_path.rglob(".*tmp*"))
    with pytest.raises(ValueError, match="format jitmodel-checkpoint"):
        C.save_checkpoint({"step": 1}, tmp_path, keep_last=1)


def test_save_removes_stale_temp_files(tmp_path):
    (tmp_path / "ckpt").mkdir()
    stale = tmp_path / "ckpt" / ".0000009.pt.tmp-999999"
    stale.write_bytes(b"partial")
    C.save_checkpoint(_ours(1), tmp_path, keep_last=1)
    assert not stale.exists()


_KILLED_WRITER = textwrap.dedent("""
    import sys, torch
    from jitmodel.checkpoint import atomic_save
    big = {"format": "jitmodel-checkpoint", "step": 2, "model": {"w": torch.ones(160 * 2**20 // 4)}}
    print("ready", flush=True)
    for _ in range(50):
        atomic_save(big, sys.argv[1])
""")


@pytest.mark.slow
def test_sigkill_while_writing_leaves_previous_checkpoint_loadable(tmp_path):
    final = tmp_path / "last.pt"
    C.atomic_save(_ours(1, 1.0), final)
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(final)], stdout=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.stdout.readline().strip() == b"ready"
    tmp = tmp_path / f".last.pt.tmp-{proc.pid}"
    deadline = time.monotonic() + 60
    while not (tmp.exists() and tmp.stat().st_size > 1 << 20):  # killed in the middle of a write
        assert time.monotonic() < deadline and proc.poll() is None, "the writer never started writing"
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ck = C.load_checkpoint(final)
    assert ck["step"] == 1 and torch.equal(ck["model"]["w"], torch.ones(3))  # old file, complete
    C.save_checkpoint(_ours(5), tmp_path, keep_last=1)  # the next save sweeps the killed writer's temp
    assert not tmp.exists()


# --------------------------------------------------------------------------- loading

def test_load_refuses_arbitrary_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "args": Evil()}, path)
    with pytest.raises(ValueError, match="not a loadable checkpoint.*GLOBAL posix.system"):
        C.load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_load_official_checkpoint_with_namespace_args(tmp_path):
    from jitmodel.config import DiffusionConfig
    from jitmodel.denoiser import Denoiser

    den = Denoiser(TINY, DiffusionConfig())
    sd = den.state_dict()
    opt = torch.optim.AdamW([p for p in den.parameters() if p.requires_grad], lr=1e-4)
    args = argparse.Namespace(model="JiT-Tiny/4", img_size=8, blr=5e-5, epochs=600, resume="")
    path = tmp_path / "checkpoint-last.pth"
    torch.save({"model": sd, "model_ema1": sd, "model_ema2": sd, "optimizer": opt.state_dict(), "epoch": 4,
                "args": args}, path)
    ck = C.load_checkpoint(path)
    assert ck["format"] == C.OFFICIAL and ck["epoch"] == 4 and ck["args"]["blr"] == 5e-5
    assert C.checkpoint_model_config(ck) == TINY
    assert C.resolve_resume(str(tmp_path), tmp_path / "out") == path  # a folder, as the official --resume


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="checkpoint not found"):
        C.load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="neither a jitmodel nor an official"):
        C.load_checkpoint(tmp_path / "x.pt")
    future = {**_ours(1), "format_version": 99}
    torch.save(future, tmp_path / "f.pt")
    with pytest.raises(ValueError, match="format version 99"):
        C.load_checkpoint(tmp_path / "f.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="not a loadable checkpoint"):
        C.load_checkpoint(tmp_path / "junk.pt")


def test_resolve_resume(tmp_path):
    assert C.resolve_resume(None, tmp_path) is None
    assert C.resolve_resume("auto", tmp_path) is None  # nothing yet: a fresh start
    C.atomic_save(_ours(1), tmp_path / "last.pt")
    assert C.resolve_resume("auto", tmp_path) == tmp_path / "last.pt"
    assert C.resolve_resume(str(tmp_path / "last.pt"), "elsewhere") == tmp_path / "last.pt"
    with pytest.raises(ValueError, match="no such file"):
        C.resolve_resume(str(tmp_path / "missing.pt"), tmp_path)
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(ValueError, match="neither last.pt nor checkpoint-last.pth"):
        C.resolve_resume(str(tmp_path / "emptydir"), tmp_path)


def test_rng_round_trip_through_a_weights_only_file(tmp_path):
    import random

    import numpy as np

    g = torch.Generator().manual_seed(3)
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    C.atomic_save({"rng": C.capture_rng(g)}, tmp_path / "r.pt")
    want = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=g))
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    g.manual_seed(99)
    C.restore_rng(torch.load(tmp_path / "r.pt", weights_only=True)["rng"], g)
    got = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(3, generator=g))
    assert torch.equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2] == want[2]
    assert torch.equal(got[3], want[3])


def test_state_fingerprint_sees_one_bit():
    sd = {"a": torch.zeros(4), "b": torch.ones(2, dtype=torch.bfloat16)}
    fp = C.state_fingerprint(sd)
    sd2 = {"a": torch.zeros(4), "b": torch.ones(2, dtype=torch.bfloat16)}
    assert C.state_fingerprint(sd2) == fp
    sd2["a"][1] = torch.finfo(torch.float32).tiny
    assert C.state_fingerprint(sd2) != fp


@pytest.mark.parametrize("module", ["jitmodel.checkpoint", "jitmodel.data", "jitmodel.dist", "jitmodel.metrics",
                                    "jitmodel.optim", "jitmodel.atomic", "jitmodel.config",
                                    "jitmodel.integrity", "jitmodel.scan", "jitmodel.manifest"])
def test_module_docstring_examples_run(module):
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(module))
    assert res.attempted > 0 and res.failed == 0


def test_mmap_load_is_private(tmp_path):
    C.atomic_save(_ours(1, 1.0), tmp_path / "last.pt")
    ck = C.load_checkpoint(tmp_path / "last.pt", mmap=True)
    ck["model"]["w"].add_(5)  # copy-on-write: the file keeps its values
    assert torch.equal(C.load_checkpoint(tmp_path / "last.pt")["model"]["w"], torch.ones(3))
    legacy = tmp_path / "legacy.pt"
    torch.save(_ours(2), legacy, _use_new_zipfile_serialization=False)
    assert C.load_checkpoint(legacy, mmap=True)["step"] == 2  # pre-zip files fall back to a plain read


# --------------------------------------------------------------------------- integrity and disk space

def _digested(step: int, value: float = 1.2345) -> dict:
    from jitmodel.integrity import digests

    ck = _ours(step, value)
    ck["model"] = {"w": torch.full((64,), value)}
    ck["digests"] = digests(ck)
    return ck


def test_flipped_bytes_are_refused_in_one_line_naming_the_file(tmp_path):
    path = C.atomic_save(_digested(1), tmp_path / "last.pt")
    assert C.load_checkpoint(path)["integrity"] == "verified"
    raw = bytearray(path.read_bytes())
    pattern = torch.full((4,), 1.2345).numpy().tobytes()
    at = raw.find(pattern)
    raw[at + 5] ^= 0xFF  # one flipped byte inside the tensor payload
    path.write_bytes(bytes(raw))
    for mmap in (False, True):
        with pytest.raises(ValueError, match=r"last\.pt is corrupt: its 'model' entry does not match") as e:
            C.load_checkpoint(path, mmap=mmap)
        assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)


def test_checkpoints_without_digests_load_unverified(tmp_path):
    path = C.atomic_save(_ours(1), tmp_path / "old.pt")
    assert C.load_checkpoint(path)["integrity"] == "unverified"


def test_a_folder_or_special_file_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="is a folder, not a checkpoint file"):
        C.load_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="a character device, not a checkpoint file"):
        C.load_checkpoint("/dev/null")


def test_save_checks_room_first_and_rotates_before_writing(tmp_path, monkeypatch):
    import collections

    from jitmodel import integrity

    for step in (1, 2):
        C.save_checkpoint(_ours(step), tmp_path, keep_last=2)
    need = integrity.nbytes(_ours(3))
    old = (tmp_path / "ckpt" / "0000001.pt").stat().st_size
    usage = collections.namedtuple("usage", "total used free")
    # room for the new file only once the rotated-out step file is counted: keep_last 2 never needs three
    monkeypatch.setattr(integrity.shutil, "disk_usage", lambda p: usage(1 << 40, 0, need - old + 1))
    C.save_checkpoint(_ours(3), tmp_path, keep_last=2)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["0000002.pt", "0000003.pt"]
    monkeypatch.setattr(integrity.shutil, "disk_usage", lambda p: usage(1 << 40, 0, 10))
    with pytest.raises(integrity.CheckpointNoSpace, match=r"needs [\d,]+ bytes") as e:
        C.save_checkpoint(_ours(4), tmp_path, keep_last=2)
    assert str(tmp_path / "ckpt") in str(e.value) and "\n" not in str(e.value)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["0000002.pt", "0000003.pt"]  # nothing lost


def test_a_disk_that_fills_during_the_write_is_one_line(tmp_path, monkeypatch):
    from jitmodel import integrity

    C.atomic_save(_ours(1), tmp_path / "last.pt")

    def full(obj, f):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0\nmore lines")
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(integrity.CheckpointNoSpace, match="writing .*last.pt failed .*bytes free in") as e:
        C.atomic_save(_ours(2), tmp_path / "last.pt")
    assert "\n" not in str(e.value)
    monkeypatch.undo()
    assert C.load_checkpoint(tmp_path / "last.pt")["step"] == 1 and not list(tmp_path.glob(".*tmp*"))


@pytest.mark.slow
def test_doctor_checks_the_digests_in_a_child(tmp_path):
    from jitplan.doctor.ckpt import verify_digests
    from jitplan.errors import UsageError

    good = C.atomic_save(_digested(1), tmp_path / "good.pt")
    bad = tmp_path / "bad.pt"
    raw = bytearray(good.read_bytes())
    raw[raw.find(torch.full((4,), 1.2345).numpy().tobytes()) + 2] ^= 0x40
    bad.write_bytes(bytes(raw))
    assert verify_digests(good) == "verified"
    with pytest.raises(UsageError, match=r"bad\.pt is corrupt"):
        verify_digests(bad)
