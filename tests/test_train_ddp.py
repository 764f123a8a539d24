"""A real 2-process torchrun run (gloo, CPU): both ranks end with identical weights and the loss falls."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from jitmodel import checkpoint as C


@pytest.mark.slow
def test_two_process_torchrun_gloo_run(tmp_path):
    torchrun = shutil.which("torchrun")
    cmd = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    cfg = {
        "model": {"variant": "JiT-Tiny/4", "img_size": 8, "num_classes": 10},
        "data": {"kind": "digits", "num_workers": 0},
        "optim": {"lr": 3e-3, "warmup_epochs": 0.0},
        "batch_per_gpu": 8, "accum_steps": 2, "world_size": 2, "max_steps": 40, "log_every": 10,
        "output_dir": str(tmp_path / "out"),
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "JITMODEL_NO_PROGRESS": "1"}
    r = subprocess.run([*cmd, "--standalone", "--nproc-per-node", "2", "-m", "jitmodel.train",
                        "--config", str(tmp_path / "c.yaml")], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "effective batch 32 = micro 8 x accum 2 x world 2" in r.stdout

    recs = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in recs if "loss" in x]
    assert len(losses) == 4 and losses[-1] < 0.7 * losses[0], losses

    replicas = recs[-1]
    assert replicas["event"] == "replicas" and len(replicas["fingerprints"]) == 2
    assert replicas["consistent"] and len(set(replicas["fingerprints"])) == 1  # per-rank weights identical
    ck = C.load_checkpoint(tmp_path / "out" / "last.pt")
    assert (ck["step"], ck["world_size"], len(ck["rng"]["per_rank"])) == (40, 2, 2)
    assert C.state_fingerprint(ck["model"]) == replicas["fingerprints"][0]  # and what rank 0 saved
    # the two ranks drew different noise: their generator states differ
    g0, g1 = (s["generator"] for s in ck["rng"]["per_rank"])
    assert not bool((g0 == g1).all())


@pytest.mark.slow
def test_sigterm_to_the_launcher_is_a_clean_exit_with_a_checkpoint(tmp_path):
    """SIGTERM to the node's launcher (``python -m jitmodel.run``, what jitplan starts): torchrun forwards it,
    the rank checkpoints and exits 0, and the launcher ends 0 with one line instead of SignalException's
    traceback (plain torchrun exits 1 there)."""
    import signal
    import time

    cfg = {
        "model": {"variant": "JiT-Tiny/4", "img_size": 8, "num_classes": 10},
        "data": {"kind": "digits", "num_workers": 0},
        "batch_per_gpu": 8, "max_steps": 100_000, "log_every": 1, "output_dir": str(tmp_path / "out"),
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "JITMODEL_NO_PROGRESS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "jitmodel.run", "--standalone", "--nproc-per-node", "1",
                          "-m", "jitmodel.train", "--config", str(tmp_path / "c.yaml")],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "out" / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (metrics.exists() and '"loss"' in metrics.read_text()):
        assert p.poll() is None, p.stderr.read()[-2000:]
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 0, err[-2000:]
    assert "Traceback" not in err and "torchrun: stopped by SIGTERM" in err, err[-2000:]
    assert C.load_checkpoint(tmp_path / "out" / "last.pt")["step"] >= 1
