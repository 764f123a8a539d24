"""The one error map: exception -> one line on stderr + exit code. Tracebacks only with JITPLAN_DEBUG=1.

0 ok; 1 a check or run failed; 2 bad usage or bad input.
"""

from __future__ import annotations

import errno
import os
import sys

import typer

from jitmodel.atomic import os_error_line
from jitmodel.helpfmt import plain_help
from jitplan.errors import JitplanError


def _one_line(text: str, limit: int = 400) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit] + "..."  # hostile input is never echoed back whole


def error(message: str, hint: str | None = None) -> None:
    print(f"Error: {_one_line(message)}", file=sys.stderr)
    if hint:
        print(f"hint: {_one_line(hint)}", file=sys.stderr)


MAKE_A_PLAN = ("make one: jitplan plan --gpus 2xRTX3060 --out plan.yaml "
               "(no GPU: jitplan plan --gpus cpu --out plan.yaml)")


def _next_step(message: str, hint: str | None) -> str | None:
    """The fix for a missing plan file, wherever it was asked for (launch, doctor, plan --show, report)."""
    if hint is None and message.startswith("plan file not found"):
        return MAKE_A_PLAN
    return hint


def _usage_hint(e: Exception) -> str | None:
    """click's usage errors: a missing PLAN argument says how to make one (others stand alone)."""
    if type(e).__name__ == "MissingParameter" and getattr(getattr(e, "param", None), "name", None) == "plan_file":
        return MAKE_A_PLAN
    return None


def run_with_error_map(app: typer.Typer, argv: list[str] | None) -> int:
    from pydantic import ValidationError

    from jitmodel.config import validation_summary  # lazy: CLI start-up

    debug = os.environ.get("JITPLAN_DEBUG") == "1"
    try:
        command = plain_help(typer.main.get_command(app))  # help at whole words (jitmodel/helpfmt.py)
        rv = command.main(args=argv, standalone_mode=False, prog_name="jitplan")
        return rv if isinstance(rv, int) else 0
    except JitplanError as e:
        if debug:
            raise
        error(e.message, _next_step(e.message, e.hint))
        return e.exit_code
    except ValidationError as e:
        if debug:
            raise
        error(f"invalid input: {validation_summary(e)}")
        return 2
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    except OSError as e:  # the file system said no (a full disk, a read-only folder): one line, nothing half-written
        if debug:
            raise
        error(os_error_line(e), "free some space or write elsewhere" if e.errno == errno.ENOSPC else None)
        return 2
    except Exception as e:  # click's usage errors and Abort, without importing click
        code = getattr(e, "exit_code", None)
        fmt = getattr(e, "format_message", None)
        if isinstance(code, int) and callable(fmt):
            error(fmt(), _usage_hint(e))
            return code
        if type(e).__name__ == "Abort":
            error("aborted")
            return 1
        raise
