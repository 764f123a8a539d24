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


def command_lines(command: str, width: int, indent: str = "  ") -> list[str]:
    r"""A shell command laid out to copy and paste at ``width`` columns: whole words only (an option stays with
    its value), each line but the last ending in `` \``; a word longer than a line gets a line of its own.

        >>> command_lines("jitmodel sample --ckpt runs/a/out/last.pt --out grid.png", 40)
        ['  jitmodel sample \\', '    --ckpt runs/a/out/last.pt \\', '    --out grid.png']
        >>> command_lines("jitplan status 9df843", 80)
        ['  jitplan status 9df843']
    """
    pieces: list[str] = []
    for word in command.split():
        if pieces and pieces[-1].startswith("-") and " " not in pieces[-1] and not word.startswith("-"):
            pieces[-1] += " " + word
        else:
            pieces.append(word)
    if len(indent) + len(" ".join(pieces)) <= width:
        return [indent + " ".join(pieces)]
    lines: list[str] = []
    line = indent + pieces[0]
    for piece in pieces[1:]:
        if len(line) + 1 + len(piece) + 2 <= width:  # room for the piece and a " \" after it
            line += " " + piece
        else:
            lines.append(line + " \\")
            line = indent + "  " + piece
    lines.append(line)
    return lines


def print_next(console: Console, what: str, commands: list[str]) -> None:
    """``next: what`` and each command on lines of its own, whole at the console's width (copy-pasteable)."""
    console.print(f"next: {what}", markup=False, highlight=False)
    for command in commands:
        for line in command_lines(command, console.width):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
