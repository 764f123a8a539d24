"""benchmarks/gpu_check.py on a machine without a GPU: argument handling, the dry run's predictions, refusal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def check(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_dry_run_predicts_and_skips_what_does_not_fit():
    r = check("--dry-run", "--gpu", "RTX3060", "--batches", "8,16")
    assert r.returncode == 0, r.stderr
    assert "RTX 3060 12GB" in r.stdout
    assert "| JiT-B/16 | 16 |" in r.stdout and "JiT-L/16 | 8 | " in r.stdout and "does not fit" in r.stdout


@pytest.mark.slow
def test_bad_arguments_exit_2():
    for args in (["--batches", "x"], ["--variants", "JiT-Q/99"], ["--steps", "0"], ["--attention", "flash"]):
        r = check("--dry-run", *args)
        assert r.returncode == 2 and "error" in r.stderr.lower(), (args, r.stderr)


@pytest.mark.slow
def test_without_cuda_it_refuses_in_one_line():
    import torch

    if torch.cuda.is_available():  # pragma: no cover - a GPU machine runs the real check instead
        return
    r = check("--batches", "8")
    assert r.returncode == 2 and r.stderr.startswith("Error: no CUDA device") and "Traceback" not in r.stderr
