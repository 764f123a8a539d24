"""Every help page at 80 and 120 columns: no line past the width, nothing cut ("…", "..."), no word split
across lines: each option's and command's help text appears whole once the whitespace is joined (issue 23:
``plan --help`` had an 18-column description column cut with "…", ``stop``/``watch`` broke mid-sentence,
``jitmodel --help`` showed literal double backticks)."""

from __future__ import annotations

import pytest
import typer

from jitmodel.cli import app as jitmodel_app
from jitmodel.cli import run as jitmodel_run
from jitplan.cli import app as jitplan_app


def _pages(app: typer.Typer) -> list[tuple[list[str], object]]:
    """(argv, click command) for the app and every command and subcommand under it."""
    root = typer.main.get_command(app)
    out: list[tuple[list[str], object]] = []

    def walk(cmd, path):
        out.append((path, cmd))
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*path, name])

    walk(root, [])
    return out


def _joined(text: str) -> str:
    return " ".join(text.split())


def _check(out: str, cmd, width: int, where: str) -> None:
    assert "…" not in out and "Traceback" not in out, where
    too_long = [ln for ln in out.splitlines() if len(ln) > width]
    assert not too_long, (where, too_long)
    flat = _joined(out)
    for p in getattr(cmd, "params", []):
        if getattr(p, "help", None) and not getattr(p, "hidden", False):
            assert _joined(p.help) in flat, (where, p.name, p.help)
    for name, sub in getattr(cmd, "commands", {}).items():
        first = _joined((sub.help or "").split("\n\n")[0]).split(". ")[0]
        assert first in flat, (where, name, first)


PAGES = [("jitplan", argv, cmd) for argv, cmd in _pages(jitplan_app)] + \
        [("jitmodel", argv, cmd) for argv, cmd in _pages(jitmodel_app) if argv != ["train"]]


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("prog,argv,cmd", PAGES, ids=[" ".join([p, *a]) for p, a, _ in PAGES])
def test_help_fits_whole_words(prog, argv, cmd, width, cli, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(width))
    if prog == "jitplan":
        r = cli(*argv, "--help")
        code, out = r.code, r.out
    else:
        capsys.readouterr()
        code = jitmodel_run([*argv, "--help"])
        out = capsys.readouterr().out
    assert code == 0
    _check(out, cmd, width, f"{prog} {' '.join(argv)} at {width}")
    assert "``" not in out  # reST markup is for the docs, not the terminal
