"""A traced model's plan is a run (issue 21, Build 4 and the Done-when): ``jitplan plan --model FILE.py:factory
--out plan.yaml`` writes a ``Plan`` (kind: plan) that names the factory and carries the traced micro-batch,
strategy and estimates, which ``jitplan launch`` runs; ``--gpus cpu --model`` writes the laptop config with the
user's network; ``--model-arg`` passes the factory's arguments; the doctor checks a user's checkpoint against
the plan by factory, arguments and source digest. Slow: a user's file trains on the digits through
``jitplan launch --local`` to samples the independent classifier reads (>= 80%)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jitmodel import custom
from jitplan.runspec import load_run_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "models" / "my_denoiser.py"
SMALL = ["--model-arg", "input_size=16", "--model-arg", "dim=64", "--model-arg", "depth=2", "--model-arg", "heads=4"]


def jp(*args: str, cwd: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jitplan", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT), "JITMODEL_NO_PROGRESS": "1",
                                        "OMP_NUM_THREADS": "1", **env})


@pytest.fixture()
def user_file(tmp_path: Path) -> Path:
    d = tmp_path / "mine"
    d.mkdir()
    f = d / "my_denoiser.py"
    shutil.copy(EXAMPLE, f)
    return f


def test_model_args_parse_and_bad_ones_are_one_line():
    assert custom.parse_kwargs(["depth=4", "mlp_ratio=2.5", "act=gelu", "bias=False"]) == \
        {"depth": 4, "mlp_ratio": 2.5, "act": "gelu", "bias": False}
    for bad, why in ((["depth"], "expected NAME=VALUE"), (["1x=2"], "expected NAME=VALUE"),
                     (["a=1", "a=2"], "given twice")):
        with pytest.raises(custom.ModelSpecError, match=why):
            custom.parse_kwargs(bad)


def test_a_file_spec_is_recorded_with_its_absolute_path(tmp_path, user_file, monkeypatch):
    monkeypatch.chdir(user_file.parent)
    assert custom.resolved("my_denoiser.py:make") == f"{user_file.resolve()}:make"
    assert custom.resolved("jitmodel.archs.dit:dit") == "jitmodel.archs.dit:dit"


@pytest.mark.parametrize("args, why", [
    (("--model-arg", "depth=2"), "--model-arg goes with --model FILE.py:factory"),
    (("--model", "MODEL", "--model-arg", "depth"), "expected NAME=VALUE"),
    (("--model", "MODEL", "--model-arg", "num_classes=7"), "num_classes 7 but the data has 10 classes"),
    (("--model", "MODEL", "--model-arg", "nope=1"), "the factory raised TypeError"),
])
def test_bad_cpu_model_plans_are_one_line_and_exit_2(args, why, tmp_path, user_file):
    argv = [str(user_file) + ":make" if a == "MODEL" else a for a in args]
    r = jp("plan", "--gpus", "cpu", *argv, cwd=tmp_path, JITPLAN_CACHE_DIR=str(tmp_path / "cache"))
    assert r.returncode == 2 and why in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 2, r.stderr


def test_the_cpu_plan_of_a_users_model_is_the_laptop_recipe_with_that_network(tmp_path, user_file):
    pytest.importorskip("torch")
    r = jp("plan", "--gpus", "cpu", "--model", "mine/my_denoiser.py:make", *SMALL, "--out", "cpu.yaml",
           cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "my_denoiser.py:make (0.1" in r.stdout and "jitplan launch cpu.yaml --local" in r.stdout
    run = load_run_spec(tmp_path / "cpu.yaml")
    m = run.train.model
    assert run.kind == "train" and m.factory == f"{user_file.resolve()}:make"  # absolute: runs start elsewhere
    assert m.factory_kwargs == {"input_size": 16, "dim": 64, "depth": 2, "heads": 4}
    assert (m.img_size, m.in_channels, m.num_classes) == (16, 3, 10) and len(m.source_digest or "") == 64
    assert run.train.data.kind == "digits" and run.train.max_steps == 1400
    assert "variant" not in yaml.safe_load((tmp_path / "cpu.yaml").read_text())["model"]  # no JiT keys


@pytest.mark.slow
def test_a_gpu_plan_of_a_users_model_is_a_launchable_plan(tmp_path, user_file):
    """The traced choice lands in the plan's train: micro-batch, accumulation, strategy, precision; the estimates
    are the traced ones; workers are capped by the host; launch --dry-run renders torchrun for 2 GPUs."""
    pytest.importorskip("torch")
    env = {"JITPLAN_CACHE_DIR": str(tmp_path / "cache")}
    args = ("plan", "--gpus", "2xRTX3060", "--host-ram", "24GB", "--cpus", "8", "--model",
            f"{user_file}:make", "--model-arg", "input_size=64")
    traced = jp(*args, "--json", cwd=tmp_path, **env)
    assert traced.returncode == 0, traced.stderr
    target = json.loads(traced.stdout)["target"]
    r = jp(*args, "--out", "plan.yaml", cwd=tmp_path, **env)
    assert r.returncode == 0 and "tracing" not in r.stderr, r.stderr  # the second plan reads the cache
    run = load_run_spec(tmp_path / "plan.yaml")
    plan, t = run.plan, run.train
    assert run.kind == "plan" and plan is not None
    assert t.model.factory == f"{user_file.resolve()}:make" and t.model.img_size == 64
    assert (t.batch_per_gpu, t.accum_steps, t.world_size) == (target["micro_batch"], target["accum_steps"], 2)
    assert t.precision == target["precision"] and plan.estimates.memory_source == "trace"
    assert plan.estimates.memory_per_gpu_bytes == target["memory_per_gpu_bytes"]
    assert plan.estimates.step_time_s == pytest.approx(target["step_time_s"])
    assert plan.estimates.params == target["params"]
    assert t.data.num_workers == plan.workers.per_rank <= 4  # 8 CPUs over 2 ranks
    shown = jp("plan", "--show", "plan.yaml", cwd=tmp_path)
    assert shown.returncode == 0 and "traced model:" in shown.stdout, shown.stderr
    dry = jp("launch", "plan.yaml", "--local", "--dry-run", "--no-doctor", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "--nproc-per-node=2" in dry.stdout and "my_denoiser-make-64px-" in dry.stdout, dry.stdout


@pytest.mark.slow
def test_the_doctor_checks_a_users_checkpoint_by_factory_arguments_and_source(tmp_path, user_file):
    pytest.importorskip("torch")
    assert jp("plan", "--gpus", "cpu", "--model", f"{user_file}:make", *SMALL, "--out", "cpu.yaml",
              cwd=tmp_path).returncode == 0
    raw = yaml.safe_load((tmp_path / "cpu.yaml").read_text())
    raw.update(max_steps=2, output_dir=str(tmp_path / "out"))
    (tmp_path / "cpu.yaml").write_text(yaml.safe_dump(raw))
    from jitmodel.train import main

    assert main(["--config", str(tmp_path / "cpu.yaml")]) == 0
    ck = str(tmp_path / "out" / "last.pt")
    ok = jp("doctor", "--plan", "cpu.yaml", "--checkpoint", ck, "--json", cwd=tmp_path)
    c11 = next(f for f in json.loads(ok.stdout)["findings"] if f["id"] == "C11")
    assert c11["level"] == "pass" and "source digest match the plan" in c11["found"], c11
    other = dict(raw, model={**raw["model"], "factory_kwargs": {**raw["model"]["factory_kwargs"], "depth": 3}})
    other["model"].pop("source_digest")
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    bad = jp("doctor", "--plan", "other.yaml", "--checkpoint", ck, "--json", cwd=tmp_path)
    c11 = next(f for f in json.loads(bad.stdout)["findings"] if f["id"] == "C11")
    assert c11["level"] == "fail" and "was built with" in c11["found"], c11
    user_file.write_text(user_file.read_text() + "\n# edited\n")
    alone = jp("doctor", "--checkpoint", ck, "--json", cwd=tmp_path)
    c11 = next(f for f in json.loads(alone.stdout)["findings"] if f["id"] == "C11")
    assert c11["level"] == "fail" and "changed since the checkpoint was written" in c11["found"], c11


@pytest.mark.slow
def test_a_users_model_trains_on_the_digits_through_jitplan_launch_local(tmp_path, user_file):
    """The Done-when of issue 21: a model defined in a user's own file, planned for this CPU with ``jitplan plan
    --gpus cpu --model``, trains through ``jitplan launch --local`` (the supervised local backend, registry and
    all) and ``jitmodel sample`` draws from its checkpoint digits the independent classifier reads (>= 80%)."""
    pytest.importorskip("sklearn")
    from jitplan.demo import recognise

    kw = ["--model-arg", "input_size=16", "--model-arg", "dim=128", "--model-arg", "depth=4", "--model-arg",
          "heads=4"]
    assert jp("plan", "--gpus", "cpu", "--model", "mine/my_denoiser.py:make", *kw, "--out", "cpu.yaml",
              cwd=tmp_path).returncode == 0
    r = jp("launch", "cpu.yaml", "--local", "--run-dir", "run", "--json", cwd=tmp_path, timeout=1500)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["status"] == "finished" and out["final_step"] == 1400, out
    ck = tmp_path / "run" / "out" / "last.pt"
    imgs = tmp_path / "imgs"
    s = subprocess.run([sys.executable, "-m", "jitmodel", "sample", "--ckpt", str(ck), "--classes",
                        "0,1,2,3,4,5,6,7,8,9", "--n", "2", "--device", "cpu", "--out", str(tmp_path / "grid.png"),
                        "--out-dir", str(imgs)], capture_output=True, text=True, timeout=900,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "JITMODEL_NO_PROGRESS": "1"})
    assert s.returncode == 0, s.stderr
    pngs = sorted(imgs.glob("*.png"))
    ok, _, _ = recognise(pngs, [i // 2 for i in range(20)])
    assert len(pngs) == 20 and ok >= 16, ok
    st = json.loads(jp("status", out["run_id"], "--json", cwd=tmp_path).stdout)
    assert st["run"]["status"] == "finished"


def test_a_latent_recipe_plans_a_run_that_reads_encoded_latents(tmp_path):
    """A family recipe in latent space writes a plan whose data is the encoded folder (kind latents, counted
    from its manifest, never flipped), with the published run's optimiser and objective, and says how to encode."""
    pytest.importorskip("torch")
    src = (ROOT / "jitplan" / "templates" / "recipes" / "family" / "dit-b-2.yaml").read_text()
    small = src.replace("depth: 12, hidden: 768, heads: 12", "depth: 2, hidden: 64, heads: 4").replace(
        "image_size: 256", "image_size: 64").replace("slug: dit-b-2", "slug: dit-tiny")
    (tmp_path / "dit-tiny.yaml").write_text(small)
    enc = tmp_path / "enc"
    enc.mkdir()
    (enc / "latents.json").write_text(json.dumps({"num_images": 5000}))
    r = jp("plan", "--gpus", "1xRTX4090", "--host-ram", "64GB", "--cpus", "16", "--recipe", "dit-tiny.yaml",
           "--data", "enc", "--out", "plan.yaml", cwd=tmp_path, JITPLAN_CACHE_DIR=str(tmp_path / "cache"))
    assert r.returncode == 0, r.stderr
    run = load_run_spec(tmp_path / "plan.yaml")
    t = run.train
    assert (t.data.kind, t.data.path, t.data.num_images, t.data.hflip) == ("latents", "enc", 5000, False)
    assert (t.model.in_channels, t.model.img_size) == (4, 8)  # 64 px / 8 x 4 channels
    assert t.lr == pytest.approx(1e-4) and t.optim.betas == (0.9, 0.999) and t.diffusion.prediction == "eps"
    assert t.epochs == pytest.approx(400_000 * 256 / 5000, rel=1e-3) and not t.eval.online
    assert any("jitplan data encode IMAGES --out enc --vae PATH" in w for w in run.plan.warnings)
    assert any("DDPM" in w for w in run.plan.warnings)
