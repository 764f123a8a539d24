"""The wheel: data ships inside the import packages; no top-level ``templates`` to collide with others."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_templates_are_read_through_the_package():
    from jitplan.schemas import recipe_names
    from jitplan.templates import read_template, templates_dir

    assert templates_dir().parent.name == "jitplan"
    assert "jit-b-16" in recipe_names()
    assert "{{NPROC_PER_NODE}}" in read_template("launch/sbatch.sh.tmpl")


@pytest.mark.slow
def test_built_wheel_has_no_top_level_templates(tmp_path):
    src = tmp_path / "src"  # a copy, so the build's build/ and egg-info stay out of the checkout
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("jitplan", "jitmodel"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    if build.returncode != 0:
        pytest.fail(f"pip wheel failed: {build.stderr[-2000:]}")
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"jitmodel", "jitplan", wheel.name.split("-")[0] + "-"
                                                + wheel.name.split("-")[1] + ".dist-info"}
    for needed in ("jitplan/templates/recipes/jit-b-16.yaml", "jitplan/templates/launch/run_remote.sh",
                   "jitplan/templates/launch/sbatch.sh.tmpl", "jitplan/templates/launch/vast_onstart.sh",
                   "jitplan/templates/compare/digits.yaml", "jitmodel/trajectory.html",
                   "jitplan/hardware/catalog.yaml"):
        assert needed in names
