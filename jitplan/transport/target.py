"""Where a run executes remotely: an SSH endpoint. Shared by the SSH backend and the cloud providers."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class SSHTarget(BaseModel):
    """An SSH endpoint. ``identity`` is a path to a private key file, never the key itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user: str = "root"
    host: str
    port: Annotated[int, Field(gt=0, lt=65536)] = 22
    identity: str | None = None

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"
