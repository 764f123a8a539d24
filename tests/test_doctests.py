"""Every example in a docstring of jitplan/ and jitmodel/ runs and prints what it says.

Docstring examples are documentation that can go stale (strategy.py's L/16 figures did when the memory model
changed); running them all here keeps them true. Modules that need a real process group, a GPU or the network
have no examples, so nothing is skipped.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import jitmodel
import jitplan


def _modules() -> list[str]:
    names = []
    for pkg in (jitplan, jitmodel):
        for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg.__name__ + "."):
            if not info.name.endswith("__main__"):  # running it is the command itself
                names.append(info.name)
    return sorted(names)


def _with_examples() -> list[str]:
    out = []
    for name in _modules():
        mod = importlib.import_module(name)
        if any(t.examples for t in doctest.DocTestFinder().find(mod)):
            out.append(name)
    return out


@pytest.mark.parametrize("module", _with_examples())
@pytest.mark.slow
def test_docstring_examples_hold(module):
    res = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS, verbose=False)
    assert res.attempted > 0 and res.failed == 0, f"{module}: {res.failed} of {res.attempted} examples failed"
