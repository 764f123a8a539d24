"""jitmodel.custom: the factory spec, building a protocol module, and what a checkpoint records so that a
checkpoint refuses to load into a different model with a one-line reason (issue 21, Build 4's pure part)."""

from __future__ import annotations

import pytest

from jitmodel import custom

torch = pytest.importorskip("torch")

FACTORY = '''
from torch import nn


class Net(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.in_channels, self.input_size, self.num_classes = 1, 4, 10
        self.blocks = nn.ModuleList([nn.Linear(width, width)])
        self.inp, self.out = nn.Linear(16, width), nn.Linear(width, 16)

    def forward(self, x, t, y):
        h = self.inp(x.flatten(1))
        for b in self.blocks:
            h = b(h)
        return self.out(h).reshape(x.shape)


def make(width=8):
    return Net(width)
'''


@pytest.fixture()
def factory(tmp_path):
    f = tmp_path / "net.py"
    f.write_text(FACTORY)
    return f


def test_build_and_forward(factory):
    m = custom.build(custom.parse_spec(f"{factory}:make"), {"width": 4})
    assert m(torch.zeros(2, 1, 4, 4), torch.rand(2), torch.tensor([0, 10])).shape == (2, 1, 4, 4)


def test_record_rebuilds_the_same_model(factory):
    rec = custom.record(f"{factory}:make", {"width": 4})
    assert rec["factory"] == f"{factory}:make" and len(rec["source_digest"]) == 64
    assert custom.build_recorded(rec).blocks[0].weight.shape == (4, 4)


@pytest.mark.parametrize("change, reason", [
    (lambda f, rec: {**rec, "factory": f"{f}:other"}, "the checkpoint holds"),
    (lambda f, rec: {**rec, "factory_kwargs": {"width": 8}}, "was built with"),
    (lambda f, rec: f.write_text(FACTORY.replace("width=8", "width=6")) and rec, "source of"),
])
def test_a_different_model_refuses_in_one_line(factory, change, reason):
    saved = custom.record(f"{factory}:make", {"width": 4})
    current = change(factory, dict(saved))
    if current is saved or current == saved:  # the source file changed on disk: rebuild what the checkpoint names
        with pytest.raises(custom.ModelSpecError, match=reason) as e:
            custom.build_recorded(saved)
    else:
        with pytest.raises(custom.ModelSpecError, match=reason) as e:
            custom.check_same_model(saved, current)
    assert "\n" not in str(e.value)


def test_a_jit_checkpoint_is_not_a_user_model(factory):
    with pytest.raises(custom.ModelSpecError, match="holds a JiT variant"):
        custom.check_same_model({}, custom.record(f"{factory}:make"))


def test_factory_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(custom.ModelSpecError, match="importing bad.py failed: RuntimeError: boom"):
        custom.build(custom.parse_spec(f"{bad}:make"))
    raising = tmp_path / "raising.py"
    raising.write_text("def make():\n    raise ValueError('no')\n")
    with pytest.raises(custom.ModelSpecError, match="the factory raised ValueError: no"):
        custom.build(custom.parse_spec(f"{raising}:make"))
