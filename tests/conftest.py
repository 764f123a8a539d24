"""Shared fixtures. ``cli`` runs the jitplan CLI in-process with the real error map."""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    from jitplan.cli import run

    def _run(*argv: str) -> CliResult:
        capsys.readouterr()
        code = run(list(argv))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return _run


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module: tiny models run faster on one thread, the box is shared,
    and bitwise comparisons need the same thread count in every run. Use it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
