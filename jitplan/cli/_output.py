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
JsonFlag = Annotated[bool, typer.Option("--json",
                                        help="Print the result as JSON on stdout (progress stays on stderr).")]

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


def whole_words(table: Any, width: int) -> Any:
    """Lay a rich ``Table`` out in ``width`` columns breaking cells at spaces only: the widest columns give
    way first, none below its longest word (rich's own squeeze evens the widest columns out and folds
    words: "workstatio" / "n").
    Returns the table (unchanged when it fits, or when even the longest words do not)."""
    from rich.text import Text

    def text(c: Any) -> str:
        return c.plain if isinstance(c, Text) else str(c)

    cols = table.columns
    lo = [max([len(w) for c in [col.header, *col.cells] for w in text(c).split()] or [1]) for col in cols]
    hi = [max([len(line) for c in [col.header, *col.cells] for line in text(c).splitlines()] or [1]) for col in cols]
    _, right, _, left = table.padding
    overhead = len(cols) * (left + right) + ((len(cols) - 1) + (2 if table.show_edge else 0) if table.box else 0)
    room = width - overhead
    if sum(hi) <= room or sum(lo) > room:
        return table
    widths = list(hi)
    for _ in range(sum(hi) - room):  # narrow the widest column that can still wrap, one column at a time
        k = max((i for i in range(len(cols)) if widths[i] > lo[i]), key=lambda i: widths[i])
        widths[k] -= 1
    for col, w in zip(cols, widths, strict=True):
        col.width = w
    return table


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


def print_next(console: Console, what: str, commands: list[str], label: str = "next: ") -> None:
    """``next: what`` and each command on lines of its own, whole at the console's width (copy-pasteable)."""
    console.print(f"{label}{what}", markup=False, highlight=False)
    for command in commands:
        for line in command_lines(command, console.width):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
