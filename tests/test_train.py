"""jitmodel.train: the recipe helpers, bad input, exact resume, signals, NaN, online eval, fault injection.

Runs JiT-Tiny/4 at 8 px on a generated 24-image folder (3 optimizer steps per epoch) on one CPU thread,
so every run takes about a second.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types

import pytest
import torch
import yaml

from jitmodel import checkpoint as C
from jitmodel.config import ModelConfig, OptimConfig
from jitmodel.dist import amp_dtype
from jitmodel.optim import lr_at, param_groups
from jitmodel.train import main


def make_folder(root, classes, per_class, size, seed=0):
    """<root>/train/<class>/img<i>.png with random pixels (size = (w, h), not square: exercises the crop)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in classes:
        (root / "train" / c).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "train" / c / f"img{i}.png")
    return root


ENV1 = {**os.environ, "OMP_NUM_THREADS": "1", "JITMODEL_NO_PROGRESS": "1"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "data", classes=("n01", "n02", "n03"), per_class=8, size=(13, 10))


def write_cfg(tmp_path, data_path, name="c.yaml", **over):
    cfg = {
        "model": {"variant": "JiT-Tiny/4", "img_size": 8, "num_classes": 3, "proj_dropout": 0.1},
        "data": {"path": str(data_path), "num_workers": 0},
        "optim": {"lr": 2e-3, "warmup_epochs": 1.5},
        "batch_per_gpu": 4, "accum_steps": 2, "epochs": 10, "log_every": 1,
        "output_dir": str(tmp_path / "out"),
    }
    for k, v in over.items():
        if isinstance(v, dict):
            cfg[k] = {**cfg.get(k, {}), **v}
        else:
            cfg[k] = v
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return p


def run(cfg_path, *extra):
    return main(["--config", str(cfg_path), *extra])


def final_state(out):
    ck = C.load_checkpoint(out / "last.pt")
    return ck, {k: C.state_fingerprint(ck[k]) for k in ("model", "ema1", "ema2")}


def assert_same_training_state(a, b):
    (ca, fa), (cb, fb) = final_state(a), final_state(b)
    assert ca["step"] == cb["step"] and ca["epoch"] == cb["epoch"] and ca["epoch_step"] == cb["epoch_step"]
    assert fa == fb
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------- recipe helpers

def test_lr_schedule_warmup_in_fractional_epochs_then_constant_or_cosine():
    o = OptimConfig(warmup_epochs=5)
    assert lr_at(0.0, 2e-4, o, 600) == 0.0  # official: exactly 0 at the first iteration
    assert lr_at(1.25, 2e-4, o, 600) == pytest.approx(5e-5)
    assert lr_at(5.0, 2e-4, o, 600) == lr_at(599.9, 2e-4, o, 600) == 2e-4
    c = OptimConfig(warmup_epochs=5, lr_schedule="cosine", min_lr=1e-6)
    assert lr_at(5.0, 2e-4, c, 105) == pytest.approx(2e-4)
    assert lr_at(55.0, 2e-4, c, 105) == pytest.approx((2e-4 + 1e-6) / 2)
    assert lr_at(105.0, 2e-4, c, 105) == pytest.approx(1e-6)
    assert lr_at(0.5, 1.0, OptimConfig(warmup_epochs=0), 10) == 1.0


def test_param_groups_like_official():
    from jitmodel.config import DiffusionConfig
    from jitmodel.denoiser import Denoiser

    den = Denoiser(ModelConfig(variant="JiT-Tiny/4", img_size=8, num_classes=3), DiffusionConfig())
    no_decay, decay = param_groups(den, 0.05)
    names = {id(p): n for n, p in den.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    d = {names[id(p)] for p in decay["params"]}
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.05
    assert "net.pos_embed" not in nd | d  # frozen: not optimised
    assert all(n.endswith(".bias") or den.get_parameter(n).ndim == 1 for n in nd)
    assert "net.blocks.0.attn.q_norm.weight" in nd and "net.blocks.0.attn.qkv.weight" in d
    assert "net.in_context_posemb" in d  # 3-D: decayed, as add_weight_decay does
    assert len(nd) + len(d) == sum(1 for p in den.parameters() if p.requires_grad)


def test_amp_dtype_choice():
    cpu = torch.device("cpu")
    assert amp_dtype("auto", cpu) is None and amp_dtype("fp32", cpu) is None
    assert amp_dtype("bf16", cpu) == torch.bfloat16
    assert amp_dtype("fp16", cpu) == torch.float16  # allowed (the scaler path is tested on CPU), never auto
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        amp_dtype("fp16", torch.device("mps"))


# --------------------------------------------------------------------------- bad input: one line, exit 2

@pytest.mark.parametrize("case,expect", [
    ("variant", "invalid config: model.variant: Value error, unknown JiT variant 'JiT-Q/16'"),
    ("lr", "invalid config: optim.lr: Input should be greater than 0"),
    ("missing_dir", "data directory not found"),
    ("no_train", "has no train/ folder"),
    ("empty_class", "class folder(s)"),
    ("world", "planned for world_size 4 but this job has 1 process"),
    ("resume", "--resume"),
    ("no_config", "config file not found"),
    ("tiny_data", "no full optimizer step per epoch"),
])
@pytest.mark.slow
def test_bad_input_is_one_line_and_exit_2(tmp_path, folder, capsys, case, expect):
    over, extra = {}, []
    if case == "variant":
        over = {"model": {"variant": "JiT-Q/16"}}
    elif case == "lr":
        over = {"optim": {"lr": -1e-4}}
    elif case == "missing_dir":
        over = {"data": {"path": str(tmp_path / "nowhere")}}
    elif case == "no_train":
        (tmp_path / "flat").mkdir()
        over = {"data": {"path": str(tmp_path / "flat")}}
    elif case == "empty_class":
        (folder / "train" / "n04").mkdir()
        over = {"model": {"num_classes": 4}}
    elif case == "world":
        over = {"world_size": 4}
    elif case == "resume":
        extra = ["--resume", str(tmp_path / "nope.pt")]
    elif case == "tiny_data":
        over = {"batch_per_gpu": 64}
    cfg = write_cfg(tmp_path, folder, **over)
    if case == "no_config":
        cfg = tmp_path / "absent.yaml"
    capsys.readouterr()
    assert run(cfg, *extra) == 2
    out, err = capsys.readouterr()
    assert err.startswith("Error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert expect in err


@pytest.mark.slow
def test_refuses_checkpoint_of_another_model(tmp_path, folder, capsys):
    assert run(write_cfg(tmp_path, folder, max_steps=1)) == 0
    other = write_cfg(tmp_path, folder, name="o.yaml", model={"variant": "JiT-Tiny/8", "img_size": 16})
    capsys.readouterr()
    assert run(other, "--resume", "auto") == 2
    err = capsys.readouterr().err
    assert err.strip() == ("Error: checkpoint is JiT-Tiny/4 at 8px (3 classes); "
                           "config asks for JiT-Tiny/8 at 16px (3 classes)")


def test_refuses_checkpoint_trained_on_other_classes(tmp_path, folder, capsys):
    cfg = write_cfg(tmp_path, folder, max_steps=1)
    assert run(cfg) == 0
    (folder / "train" / "n02").rename(folder / "train" / "n02b")
    capsys.readouterr()
    assert run(cfg, "--resume", "auto", "--max-steps", "2") == 2
    assert "trained on other classes (3 vs 3 in the data; first difference at label 1)" in capsys.readouterr().err


# --------------------------------------------------------------------------- a run and its files

@pytest.mark.slow
def test_run_writes_metrics_and_a_self_describing_checkpoint(tmp_path, folder):
    assert run(write_cfg(tmp_path, folder, epochs=2)) == 0
    out = tmp_path / "out"
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 7))
    assert {"step", "epoch", "loss", "lr", "img_per_s", "peak_mem_mib"} <= set(steps[0])
    assert steps[0]["lr"] == 0.0 and steps[-1]["lr"] == pytest.approx(2e-3)  # epoch 5/3 > warm-up 1.5
    assert steps[3]["lr"] == pytest.approx(2e-3 * 1.0 / 1.5)  # epoch 1.0 of a 1.5-epoch warm-up
    assert recs[-1]["event"] == "replicas" and recs[-1]["consistent"]
    ck = torch.load(out / "last.pt", weights_only=True)  # plain containers only
    assert ck["format"] == "jitmodel-checkpoint" and ck["format_version"] == 2
    assert (ck["step"], ck["epoch"], ck["epoch_step"], ck["world_size"]) == (6, 2, 0, 1)
    assert ck["classes"] == ["n01", "n02", "n03"]
    assert ck["model_config"]["variant"] == "JiT-Tiny/4" and ck["train_config"]["accum_steps"] == 2
    assert set(ck["versions"]) == {"jitmodel", "torch", "python"}
    assert all(k.startswith("net.") for k in ck["model"]) and set(ck["ema1"]) == set(ck["model"])
    assert {"torch", "numpy", "python", "generator", "per_rank"} <= set(ck["rng"])
    assert sorted(p.name for p in (out / "ckpt").iterdir()) == ["0000003.pt", "0000006.pt"]
    assert not torch.equal(ck["ema1"]["net.final_layer.linear.weight"], ck["model"]["net.final_layer.linear.weight"])


@pytest.mark.slow
def test_bf16_autocast_and_sdpa_on_cpu(tmp_path, folder):
    cfg = write_cfg(tmp_path, folder, precision="bf16", model={"attention": "sdpa"}, max_steps=3)
    assert run(cfg) == 0
    ck, _ = final_state(tmp_path / "out")
    assert all(v.dtype == torch.float32 for v in ck["model"].values())  # autocast: fp32 master weights
    recs = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss"] > 0 for r in recs if "loss" in r)


@pytest.mark.slow
def test_resume_from_an_official_checkpoint_folder(tmp_path, folder, capsys):
    import argparse

    assert run(write_cfg(tmp_path, folder, max_steps=3)) == 0
    ours = C.load_checkpoint(tmp_path / "out" / "last.pt")
    official = tmp_path / "official"
    official.mkdir()
    torch.save({"model": ours["model"], "model_ema1": ours["ema1"], "model_ema2": ours["ema2"],
                "optimizer": ours["optimizer"], "epoch": 0,
                "args": argparse.Namespace(model="JiT-Tiny/4", img_size=8, class_num=3)},
               official / "checkpoint-last.pth")
    cfg = write_cfg(tmp_path, folder, name="ft.yaml", output_dir=str(tmp_path / "ft"), max_steps=4)
    capsys.readouterr()
    assert run(cfg, "--resume", str(official)) == 0
    assert "resumed at step 3 (epoch 1, step 0 of it)" in capsys.readouterr().out
    ck = C.load_checkpoint(tmp_path / "ft" / "last.pt")
    assert ck["step"] == 4 and ck["epoch"] == 1 and ck["epoch_step"] == 1


# --------------------------------------------------------------------------- exact resume

@pytest.mark.parametrize("stop_at", [3, 4])  # 3: at an epoch boundary; 4: one step into epoch 1
@pytest.mark.slow
def test_interrupted_and_resumed_equals_uninterrupted_bitwise(tmp_path, folder, stop_at):
    whole = write_cfg(tmp_path, folder, name="whole.yaml", output_dir=str(tmp_path / "whole"), max_steps=7)
    part = write_cfg(tmp_path, folder, name="part.yaml", output_dir=str(tmp_path / "part"), max_steps=stop_at)
    assert run(whole) == 0
    assert run(part) == 0
    assert C.load_checkpoint(tmp_path / "part" / "last.pt")["step"] == stop_at
    assert run(part, "--resume", "auto", "--max-steps", "7") == 0
    assert_same_training_state(tmp_path / "whole", tmp_path / "part")
    # and a fresh run with the same seed is the same too (no hidden state anywhere)
    assert run(write_cfg(tmp_path, folder, name="again.yaml", output_dir=str(tmp_path / "again"), max_steps=7)) == 0
    assert_same_training_state(tmp_path / "whole", tmp_path / "again")


@pytest.mark.slow
def test_step_checkpoints_resume_exactly_including_at_an_epoch_end(tmp_path, folder):
    cfg = write_cfg(tmp_path, folder, max_steps=7, checkpoint={"every_steps": 3, "every_epochs": 100, "keep_last": 5})
    assert run(cfg) == 0
    assert sorted(p.name for p in (tmp_path / "out" / "ckpt").iterdir()) == ["0000003.pt", "0000006.pt", "0000007.pt"]
    at_end = C.load_checkpoint(tmp_path / "out" / "ckpt" / "0000003.pt")
    assert (at_end["epoch"], at_end["epoch_step"]) == (1, 0)  # saved after the epoch was counted
    for start in ("0000003.pt", "0000006.pt"):
        out = tmp_path / f"from-{start}"
        assert run(cfg, "--resume", str(tmp_path / "out" / "ckpt" / start), "--output-dir", str(out)) == 0
        assert_same_training_state(tmp_path / "out", out)


@pytest.mark.slow
def test_sigterm_finishes_the_step_checkpoints_exits_0_and_resumes_exactly(tmp_path, folder):
    cfg = write_cfg(tmp_path, folder, name="long.yaml", output_dir=str(tmp_path / "sig"), max_steps=10_000)
    proc = subprocess.Popen([sys.executable, "-m", "jitmodel.train", "--config", str(cfg)], env=ENV1,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "sig" / "metrics.jsonl"
    deadline = time.monotonic() + 90
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM" in out
    stopped = C.load_checkpoint(tmp_path / "sig" / "last.pt")["step"]
    assert 2 <= stopped < 10_000
    end = stopped + 2
    assert run(cfg, "--resume", "auto", "--max-steps", str(end)) == 0
    ref = write_cfg(tmp_path, folder, name="ref.yaml", output_dir=str(tmp_path / "ref"), max_steps=end)
    assert run(ref) == 0
    assert_same_training_state(tmp_path / "ref", tmp_path / "sig")


@pytest.mark.slow
def test_sigterm_to_the_whole_process_group_still_checkpoints(tmp_path):
    """A preempting host may signal every process, DataLoader workers included: the workers ignore it, so
    the rank finishes its step, checkpoints and exits 0 instead of dying of a 'killed by signal' error."""
    cfg = write_cfg(tmp_path, None, name="grp.yaml", output_dir=str(tmp_path / "grp"), max_steps=10_000,
                    model={"num_classes": 10},
                    data={"kind": "digits", "num_workers": 2, "persistent_workers": True})
    proc = subprocess.Popen([sys.executable, "-m", "jitmodel.train", "--config", str(cfg)], env=ENV1,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    metrics = tmp_path / "grp" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)  # the trainer and both workers
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    assert "killed by signal" not in err
    assert C.load_checkpoint(tmp_path / "grp" / "last.pt")["step"] >= 2


# --------------------------------------------------------------------------- failures

def test_nan_loss_is_a_clear_error_and_exit_1(tmp_path, folder, capsys, monkeypatch):
    from jitmodel.denoiser import Denoiser

    monkeypatch.setattr(Denoiser, "forward", lambda self, x, y, generator=None:
                        self.net.final_layer.linear.weight.sum() * float("nan"))
    capsys.readouterr()
    assert run(write_cfg(tmp_path, folder)) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: the loss is nan at step 1 (epoch 0)") and "Traceback" not in err


@pytest.mark.slow
def test_worker_kill_injection_kills_the_run_like_an_oom(tmp_path, monkeypatch):
    base = {"model": {"num_classes": 10}, "data": {"kind": "digits", "num_workers": 2, "persistent_workers": False},
            "batch_per_gpu": 4, "accum_steps": 1, "max_steps": 40}
    cfg = write_cfg(tmp_path, None, **base)
    cmd = [sys.executable, "-m", "jitmodel.train", "--config", str(cfg)]
    killed = subprocess.run(cmd, env={**ENV1, "JITMODEL_INJECT_WORKER_KILL": "2"}, capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode != 0
    assert "DataLoader worker (pid" in killed.stderr and "Killed" in killed.stderr
    monkeypatch.setenv("JITMODEL_INJECT_WORKER_KILL", "3")  # 2 workers < 3: never fires
    assert run(cfg, "--max-steps", "12", "--output-dir", str(tmp_path / "calm")) == 0


# --------------------------------------------------------------------------- online evaluation hook

@pytest.mark.slow
def test_online_eval_hook_runs_with_ema_weights_at_the_cadence(tmp_path, folder, monkeypatch):
    calls = []

    def online_eval(net, cfg, *, epoch, device, out_dir):
        calls.append((epoch, C.state_fingerprint(net.state_dict()), net.training))
        return {"fid": 100.0 - epoch}

    monkeypatch.setitem(sys.modules, "jitmodel.evaluate", types.SimpleNamespace(online_eval=online_eval))
    cfg = write_cfg(tmp_path, folder, epochs=4, eval={"online": True, "every_epochs": 2, "at_epoch0": True},
                    sample={"ema": "ema2"})
    assert run(cfg) == 0
    assert [c[0] for c in calls] == [0, 2, 3] and not any(c[2] for c in calls)  # official cadence + last
    _, fps = final_state(tmp_path / "out")
    assert calls[-1][1] == fps["ema2"] != fps["model"]  # the last eval saw EMA2 (no step after it)
    recs = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert [r["eval/fid"] for r in recs if "eval/fid" in r] == [100.0, 98.0, 97.0]


@pytest.mark.slow
def test_online_eval_missing_is_reported_and_training_continues(tmp_path, folder, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "jitmodel.evaluate", None)  # import fails
    assert run(write_cfg(tmp_path, folder, epochs=2, eval={"online": True, "every_epochs": 1})) == 0
    assert "online evaluation unavailable" in capsys.readouterr().out


# --------------------------------------------------------------------------- the docs' example runs

@pytest.mark.slow
def test_docs_training_quickstart_config_runs(tmp_path, capsys):
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "training.md").read_text()
    block = re.search(r"```yaml\n# digits.yaml\n(.*?)```", text, re.S).group(1)
    cfg = yaml.safe_load(block)
    cfg["output_dir"] = str(tmp_path / "digits")
    cfg["model"]["img_size"] = 8  # the same config, smaller and shorter
    (tmp_path / "digits.yaml").write_text(yaml.safe_dump(cfg))
    assert run(tmp_path / "digits.yaml", "--max-steps", "2") == 0
    ck = C.load_checkpoint(tmp_path / "digits" / "last.pt")
    assert C.describe(C.checkpoint_model_config(ck)) == "JiT-Tiny/4 at 8px (10 classes)" and ck["step"] == 2
    assert ck["classes"] == [str(i) for i in range(10)]


# --------------------------------------------------------------------------- metrics sink

def test_metrics_logger_jsonl_bar_and_switches(tmp_path, monkeypatch, capsys):
    from jitmodel.metrics import MetricsLogger, progress_wanted

    with MetricsLogger(tmp_path, total_steps=4, progress=True, tensorboard=False) as m:
        m.note("hello")
        m.advance(1)
        m.log({"step": 2, "loss": float("nan"), "lr": 1e-4})
    rec = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert rec == {"step": 2, "loss": None, "lr": 1e-4}  # NaN is not JSON: written as null
    err = capsys.readouterr().err
    assert "hello" in err and "step 2" in err  # with a bar, lines go above it on stderr
    monkeypatch.setenv("JITMODEL_NO_PROGRESS", "1")
    assert not progress_wanted()
