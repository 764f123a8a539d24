"""The one output sink: rich for people, plain ``json.dumps`` for ``--json``.

Data goes to stdout; progress, hints and errors go to stderr.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console

# The shared options, declared once; a command writes ``json_out: JsonFlag = False``.
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (progress stays on stderr).")]

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False)


def to_jsonable(data: Any) -> Any:
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    if isinstance(data, list):
        return [to_jsonable(x) for x in data]
    if isinstance(data, dict):
        return {k: to_jsonable(v) for k, v in data.items()}
    return data


def emit(data: Any, *, json_mode: bool, render: Callable[[Console], None]) -> None:
    """Print ``data`` as JSON (``json_mode``) or call ``render`` with the stdout console."""
    if json_mode:
        print(json.dumps(to_jsonable(data), indent=2, sort_keys=False))
    else:
        render(out)


def note(message: str) -> None:
    """A hint or progress line for people, on stderr."""
    err.print(message)
