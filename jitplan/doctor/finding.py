"""What a check returns: an id, a level, what it found (with the numbers) and how to fix it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Level = Literal["pass", "warn", "fail", "skip"]


class Finding(BaseModel):
    """One check's verdict. ``found`` says what was seen, with numbers; ``fix`` is a concrete next step.

    >>> Finding(id="C7", level="fail", title="/dev/shm", found="64 MiB", fix="docker run --shm-size=8g").level
    'fail'
    """

    model_config = ConfigDict(extra="forbid")
    id: str
    level: Level
    title: str
    found: str
    fix: str | None = None


class DoctorReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    findings: list[Finding] = Field(default_factory=list)
    seconds: float | None = None

    @property
    def failed(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "fail"]

    def by_id(self, check_id: str) -> Finding:
        for f in self.findings:
            if f.id == check_id:
                return f
        raise KeyError(check_id)

    def counts(self) -> dict[str, int]:
        out = {"pass": 0, "warn": 0, "fail": 0, "skip": 0}
        for f in self.findings:
            out[f.level] += 1
        return out
