"""SSH and rsync command lines (pure): connection options, target parsing, quoting. No side effects.

Every remote command is one string built with ``shlex.quote`` around each word. Host keys are checked:
``StrictHostKeyChecking=yes`` against the user's known_hosts (or the file given), ``accept-new`` only when
asked; never ``no``. Used by the SSH launch (``jitplan.launch.ssh``) and the pull (``jitplan.launch.pull``).

    >>> t = parse_target("root@10.0.0.5:2222")
    >>> ssh_argv(t, SSHOptions(), ["cat", "a b"])[-2:]
    ['--', "cat 'a b'"]
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from jitplan.errors import UsageError
from jitplan.transport.target import SSHTarget


class SSHOptions(BaseModel):
    """How to connect. ``known_hosts`` None means the user's own (~/.ssh/known_hosts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    known_hosts: str | None = None
    accept_new_host_key: bool = False  # StrictHostKeyChecking=accept-new: trust a host seen the first time
    connect_timeout_s: Annotated[int, Field(gt=0)] = 15
    python: str = "python3"  # the remote interpreter (or a venv's), used when no env is created
    detach: Literal["setsid", "tmux"] = "setsid"


class Step(BaseModel):
    """One local command of a launch (ssh or rsync), with what it is for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    argv: list[str]

    def shell(self) -> str:
        return shlex.join(self.argv)


def parse_target(text: str, identity: str | None = None) -> SSHTarget:
    """``user@host[:port]`` -> SSHTarget. Bad input raises UsageError (exit 2).

        >>> parse_target("root@10.0.0.5:2222")
        SSHTarget(user='root', host='10.0.0.5', port=2222, identity=None)
    """
    user, sep, rest = text.rpartition("@")
    if not sep or not user or not rest:
        raise UsageError(f"--ssh wants user@host[:port], got {text!r}")
    host, port = rest, 22
    if rest.count(":") == 1:
        host, port_s = rest.split(":")
        if not port_s.isdigit() or not 0 < int(port_s) < 65536:
            raise UsageError(f"--ssh port must be a number in 1..65535, got {port_s!r}")
        port = int(port_s)
    if not host or any(c.isspace() for c in user + host) or user.startswith("-") or host.startswith("-"):
        raise UsageError(f"--ssh wants user@host[:port], got {text!r}")
    if identity is not None and not Path(identity).expanduser().is_file():
        raise UsageError(f"--identity {identity}: no such key file")
    return SSHTarget(user=user, host=host, port=port, identity=identity)


def _ssh_option_value(v: str) -> str:
    # ssh -o splits file lists on whitespace; a double-quoted value is one path.
    if '"' in v:
        raise UsageError(f"a path for ssh may not contain a double quote: {v!r}")
    return f'"{v}"' if any(c.isspace() for c in v) else v


def ssh_base(target: SSHTarget, opts: SSHOptions) -> list[str]:
    """``ssh`` with the connection options, no destination (also rsync's ``-e`` command)."""
    argv = ["ssh", "-p", str(target.port), "-o", "BatchMode=yes", "-o", f"ConnectTimeout={opts.connect_timeout_s}",
            "-o", f"StrictHostKeyChecking={'accept-new' if opts.accept_new_host_key else 'yes'}"]
    if opts.known_hosts:
        argv += ["-o", f"UserKnownHostsFile={_ssh_option_value(str(Path(opts.known_hosts).expanduser()))}"]
    if target.identity:
        argv += ["-i", str(Path(target.identity).expanduser()), "-o", "IdentitiesOnly=yes"]
    return argv


def ssh_argv(target: SSHTarget, opts: SSHOptions, words: Sequence[str] | str) -> list[str]:
    """An ssh call running ``words`` on the remote; a list is quoted word by word, a string is sent as is."""
    remote = words if isinstance(words, str) else shlex.join(words)
    return [*ssh_base(target, opts), f"{target.user}@{target.host}", "--", remote]


def rsync_argv(target: SSHTarget, opts: SSHOptions, src: str, dest: str, *, excludes: Sequence[str] = (),
               delete: bool = False) -> list[str]:
    """rsync ``src`` to ``dest`` on the remote. The remote path is sent protected (one argument as is)."""
    argv = ["rsync", "-az", "--partial", "--protect-args", "-e", shlex.join(ssh_base(target, opts))]
    if delete:
        argv.append("--delete")
    argv += [f"--exclude={x}" for x in excludes]
    return [*argv, src, f"{target.user}@{target.host}:{dest}"]


def rsync_pull_argv(target: SSHTarget, opts: SSHOptions, src: str, dest: str, *,
                    includes: Sequence[str] = ()) -> list[str]:
    """rsync ``src`` on the remote to ``dest`` here; with ``includes``, only those paths (rsync filter rules,
    anchored at ``src``) and nothing else. Files land atomically (rsync's temp name, then rename)."""
    argv = ["rsync", "-a", "--partial", "--protect-args", "-e", shlex.join(ssh_base(target, opts))]
    if includes:
        argv += [f"--include={x}" for x in includes] + ["--exclude=*"]
    return [*argv, f"{target.user}@{target.host}:{src}", dest]


def remote_sh(script: str) -> list[str]:
    return ["sh", "-c", script]
