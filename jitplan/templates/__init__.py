"""Data files shipped inside jitplan: reference recipes (``recipes/*.yaml``), launch templates
(``launch/``: the remote run script, the Vast onstart script, the sbatch template) and compare
settings (``compare/``). Not code: each file's header says who renders it.

Read through ``importlib.resources``, so the same call works in a checkout, an editable install and
an installed wheel (which unpacks these as plain files).

    >>> read_template("launch/sbatch.sh.tmpl").startswith("#!")
    True
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def templates_dir() -> Path:
    """The folder holding the templates, as a path (uploads and globbing need one).

    setuptools installs package data as plain files, so ``importlib.resources`` hands back a real folder;
    a zipped install (not supported) fails here with a clear message rather than later.
    """
    root = resources.files(__name__)
    if not isinstance(root, Path):
        raise RuntimeError(f"jitplan's templates are not plain files ({root!r}); install jitplan unzipped")
    return root


def read_template(relative: str) -> str:
    """The text of one template, e.g. ``read_template("launch/run_remote.sh")``."""
    return resources.files(__name__).joinpath(relative).read_text(encoding="utf-8")
