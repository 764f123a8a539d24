"""``jitmodel sample``: grids and singles, another resolution, official checkpoints, and clear refusals."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402
from test_sample_tinyckpt import tiny_checkpoint  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

from jitmodel.cli import run  # noqa: E402


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def jm(capsys):
    def _run(*argv: str) -> Result:
        capsys.readouterr()
        code = run([str(a) for a in argv])
        cap = capsys.readouterr()
        return Result(code, cap.out, cap.err)
    return _run


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory)


def test_sample_grid_and_singles(jm, ckpt, tmp_path):
    r = jm("sample", "--ckpt", ckpt, "--classes", "1,7", "--n", "2", "--steps", "6", "--cfg", "2.0",
           "--interval", "0.1,1.0", "--device", "cpu", "--out", tmp_path / "g.png", "--out-dir", tmp_path / "s",
           "--json")
    assert r.code == 0, r.err
    import json

    info = json.loads(r.out)
    assert info["images"] == 4 and info["img_size"] == 32 and info["forwards_per_image"] < 2 * 11
    with Image.open(tmp_path / "g.png") as g:
        assert g.size == (2 * 34 + 2, 2 * 34 + 2)  # 2 per row (one row per class), 2 px padding
    singles = sorted((tmp_path / "s").glob("*.png"))
    assert [p.name for p in singles] == ["00000.png", "00001.png", "00002.png", "00003.png"]


def test_a_32px_checkpoint_samples_at_48px(jm, ckpt, tmp_path):
    r = jm("sample", "--ckpt", ckpt, "--random", "--n", "2", "--steps", "4", "--img-size", "48",
           "--device", "cpu", "--out", tmp_path / "g.png", "--out-dir", tmp_path / "s")
    assert r.code == 0, r.err
    with Image.open(tmp_path / "s" / "00000.png") as im:
        assert im.size == (48, 48)
    from jitmodel.sample import load_for_sampling

    m = load_for_sampling(ckpt, img_size=48)
    assert tuple(m.denoiser.net.pos_embed.shape) == (1, 36, 96)  # 6 x 6 patches of 8 px
    assert m.trained_cfg.img_size == 32 and m.model_cfg.img_size == 48


@pytest.mark.parametrize("args,needle", [
    (("--variant", "JiT-Tiny/4"), "JiT-Tiny/8 at 32px"),  # a /8 checkpoint into a /4 request
    (("--img-size", "36"), "not a multiple of 8"),
    (("--classes", "3,12"), "class index 12 is out of range"),
    (("--ema", "ema3"), "ema1, ema2 or raw"),
    (("--interval", "0.1"), "lo,hi"),
])
def test_refusals_are_one_line_exit_2(jm, ckpt, tmp_path, args, needle):
    base = {"--classes": "1"}
    argv = ["sample", "--ckpt", ckpt, "--device", "cpu", "--steps", "2", "--out", tmp_path / "g.png"]
    extra = dict(zip(args[0::2], args[1::2], strict=True))
    for k, v in {**base, **extra}.items():
        argv += [k, v]
    r = jm(*argv)
    assert r.code == 2 and needle in r.err, r.err
    assert r.err.count("\n") == 1 and r.err.startswith("Error: ") and "Traceback" not in r.err


def _official_checkpoint(path, variant: str, img_size: int, tiny_sd=None):
    """An official-format checkpoint (model, model_ema1, model_ema2, args). Without ``tiny_sd`` the weights
    are zero views of one element, so a JiT-B/32 at 512 px costs a few kB on disk."""
    from jitmodel.config import ModelConfig
    from jitmodel.model import build_model

    if tiny_sd is None:
        meta = build_model(ModelConfig(variant=variant, img_size=img_size), device="meta").state_dict()
        tiny_sd = {f"net.{k}": torch.zeros(1).expand(v.shape) for k, v in meta.items()}
    args = argparse.Namespace(model=variant, img_size=img_size,
                              noise_scale=2.0, t_eps=0.05, cfg=2.9)
    torch.save({"model": tiny_sd, "model_ema1": tiny_sd, "model_ema2": tiny_sd, "args": args, "epoch": 3}, path)
    return path


def test_official_b32_checkpoint_into_a_b16_request_is_refused(jm, tmp_path):
    p = _official_checkpoint(tmp_path / "checkpoint-last.pth", "JiT-B/32", 512)
    r = jm("sample", "--ckpt", p, "--classes", "207", "--variant", "JiT-B/16", "--device", "cpu")
    assert r.code == 2, r.err
    assert "JiT-B/32 at 512px" in r.err and "JiT-B/16" in r.err and "patch 32 vs 16" in r.err
    r = jm("sample", "--ckpt", p, "--classes", "207", "--img-size", "500", "--device", "cpu")
    assert r.code == 2 and "500px" in r.err and "multiple of 32" in r.err


def test_official_format_tiny_checkpoint_samples(jm, ckpt, tmp_path):
    sd = torch.load(ckpt, weights_only=True)["ema1"]
    p = _official_checkpoint(tmp_path / "checkpoint-last.pth", "JiT-Tiny/8", 32, tiny_sd=sd)
    r = jm("sample", "--ckpt", p, "--classes", "2", "--n", "1", "--steps", "3", "--device", "cpu",
           "--out", tmp_path / "g.png", "--json")
    assert r.code == 0, r.err
    from jitmodel.sample import load_for_sampling

    assert load_for_sampling(p).diffusion.noise_scale == 2.0  # read from the official args


def test_missing_checkpoint_is_exit_2(jm, tmp_path):
    r = jm("sample", "--ckpt", tmp_path / "nope.pt", "--classes", "1", "--device", "cpu")
    assert r.code == 2 and "not found" in r.err


def test_python_m_jitmodel_help_runs():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "jitmodel", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for cmd in ("train", "sample", "trajectory", "evaluate", "fid-stats"):
        assert cmd in out.stdout


def test_the_python_example_in_docs_runs(ckpt):
    import re

    doc = (Path(__file__).resolve().parents[1] / "docs" / "sampling.md").read_text()
    block = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    code = block.replace('"runs/jit/last.pt"', repr(str(ckpt))).replace("steps=50", "steps=3")
    exec(compile(code, "docs/sampling.md", "exec"), {})


def test_train_delegates_to_the_trainer(jm, tmp_path):
    r = jm("train", "--config", tmp_path / "missing.yaml")
    assert r.code == 2 and "missing.yaml" in r.err


def test_evaluate_without_inception_weights_stops_before_generating(jm, ckpt, tmp_path, monkeypatch):
    import numpy as np

    from jitmodel.fid import INCEPTION_FILE

    monkeypatch.delenv("JITMODEL_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    np.savez(tmp_path / "in256.npz", mu=np.zeros(2048), sigma=np.eye(2048))  # official layout: no extractor
    r = jm("evaluate", "--ckpt", ckpt, "--out-dir", tmp_path / "eval", "--num-images", "10",
           "--ref-stats", tmp_path / "in256.npz", "--device", "cpu")
    assert r.code == 2 and INCEPTION_FILE in r.err and str(tmp_path / "hub") in r.err
    assert not (tmp_path / "eval").exists()


def test_sample_and_trajectory_say_how_far_they_are(jm, ckpt, tmp_path):
    # issue 23: `jitmodel sample` printed nothing for 220 s. Piped (capsys is no terminal): a quiet line per
    # tenth of the steps with an ETA, the last saying how long it took in all.
    r = jm("sample", "--ckpt", ckpt, "--classes", "1", "--n", "1", "--steps", "10", "--device", "cpu",
           "--out", tmp_path / "g.png")
    lines = [ln for ln in r.err.splitlines() if ln.startswith("sample 1 images:")]
    assert r.code == 0 and len(lines) == 10 and "eta" in lines[0] and lines[-1].endswith("in all"), r.err
    # the tiny checkpoint trained 100 steps: far too short to draw digits, and sample says so with the fix
    assert "note: these weights trained 100 optimizer steps" in r.err and "train longer" in r.err
    r = jm("trajectory", "--ckpt", ckpt, "--class", "3", "--steps", "4", "--device", "cpu", "--out", tmp_path / "s.png")
    assert r.code == 0 and "trajectory of 1 class(es): 4/4 steps (100 %)" in r.err, r.err
