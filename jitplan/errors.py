"""Domain exceptions. Each carries the exit code the CLI uses: 2 bad input, 1 a failed check or run."""

from __future__ import annotations


class JitplanError(Exception):
    """Base class: a message for the user (one line) and an optional hint."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(JitplanError):
    """Bad input: unknown GPU, malformed file, impossible option. Exit 2."""

    exit_code = 2


class CheckFailed(JitplanError):
    """A check, plan or run did not succeed (infeasible plan, failed doctor check). Exit 1."""

    exit_code = 1
