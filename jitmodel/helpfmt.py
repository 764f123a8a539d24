"""Help pages that fit the terminal: plain click layout, wrapped at whole words only.

Typer's rich help squeezes a five-column table into 80 columns: the description column shrinks to a
dozen characters, long words are cut with "…" and metavars fold mid-word. Click's definition-list
layout gives the description the rest of the line; this formatter wraps it at spaces only (never inside
``--rdzv-endpoint`` or ``1xM4Pro-48GB``). ``plain_help(command)`` switches a whole click command tree over;
both ``jitplan`` and ``jitmodel`` call it before they run.

    >>> wrap_words("--rdzv-endpoint HOST:PORT for multi-node runs", 20)
    ['--rdzv-endpoint', 'HOST:PORT for', 'multi-node runs']
"""

from __future__ import annotations

import shutil
import textwrap
from typing import Any

import typer

# typer carries its own click; its Context names the formatter class it uses
_HelpFormatter: Any = typer.Context.formatter_class


def wrap_words(text: str, width: int) -> list[str]:
    """``text`` as lines of at most ``width`` columns, broken at spaces only (a longer word keeps its own line)."""
    return textwrap.wrap(text, max(width, 10), break_on_hyphens=False, break_long_words=False) or [""]


def _paragraphs(text: str) -> list[tuple[bool, str]]:
    """(keep as written, text) per paragraph; a paragraph starting with a ``\\b`` line keeps its lines."""
    out = []
    for block in textwrap.dedent(text).split("\n\n"):
        if block.lstrip(" ").startswith("\b"):
            out.append((True, block.split("\n", 1)[1] if "\n" in block else ""))
        elif block.strip():
            out.append((False, " ".join(block.split())))
    return out


def _wrap(text: str, width: int, indent: str = "") -> str:
    lines: list[str] = []
    for keep, para in _paragraphs(text):
        if lines:
            lines.append("")
        if keep:
            lines += [indent + ln for ln in para.splitlines()]
        else:
            lines += [indent + ln for ln in wrap_words(para, width - len(indent))]
    return "\n".join(lines)


class WholeWordFormatter(_HelpFormatter):
    """click's layout at the terminal's width (at most 100 columns), words never split."""

    def __init__(self, indent_increment: int = 2, width: int | None = None, max_width: int | None = None) -> None:
        cols = shutil.get_terminal_size().columns
        super().__init__(indent_increment, width or max(min(cols, max_width or 100) - 1, 40), max_width)

    def write_text(self, text: str) -> None:
        self.write(_wrap(text, self.width, " " * self.current_indent) + "\n")

    def write_usage(self, prog: str, args: str = "", prefix: str | None = None) -> None:
        head = f"{' ' * self.current_indent}{prefix if prefix is not None else 'Usage: '}{prog}"
        lines = wrap_words(f"{head} {args}".rstrip(), self.width)
        self.write("\n".join([lines[0], *("    " + ln for ln in wrap_words(" ".join(lines[1:]), self.width - 4))]
                             if len(lines) > 1 else lines) + "\n")

    def write_dl(self, rows: Any, col_max: int = 30, col_spacing: int = 2) -> None:
        rows = list(rows)
        first_col = min(max((len(r[0]) for r in rows), default=0), col_max) + col_spacing
        pad = " " * (self.current_indent + first_col)
        for term, desc in rows:
            self.write(" " * self.current_indent + term)
            if not desc:
                self.write("\n")
                continue
            if len(term) <= first_col - col_spacing:
                self.write(" " * (first_col - len(term)))
            else:
                self.write("\n" + pad)
            lines = _wrap(desc, self.width - len(pad)).splitlines() or [""]
            self.write(lines[0] + "\n" + "".join(f"{pad}{ln}\n" if ln else "\n" for ln in lines[1:]))


class _Context(typer.Context):
    formatter_class = WholeWordFormatter


def plain_help(command: Any) -> Any:
    """Switch ``command`` and its subcommands to the whole-word plain layout (returns it)."""
    command.context_class = _Context
    if hasattr(command, "rich_markup_mode"):
        command.rich_markup_mode = None  # typer: click's format_help instead of the rich panels
    for sub in getattr(command, "commands", {}).values():
        if sub.help and not sub.short_help:  # the whole first sentence in the command list, wrapped, not cut
            sub.short_help = first_sentence(sub.help)
        plain_help(sub)
    return command


def first_sentence(text: str) -> str:
    """The first sentence of a help text's first paragraph.

        >>> first_sentence("Stop a run (it checkpoints). Then pull.")
        'Stop a run (it checkpoints).'
    """
    para = " ".join(textwrap.dedent(text).strip().split(chr(10) * 2)[0].split())
    cut = para.find(". ")
    return para if cut < 0 else para[:cut + 1]
