"""Run a node command on this machine: its own process group, output teed to ``run_dir/train.log``.

    >>> import sys, tempfile
    >>> from jitplan.launch.torchrun import NodeCommand
    >>> d = tempfile.mkdtemp()
    >>> p = start(NodeCommand(node_rank=0, argv=[sys.executable, "-c", "print('hi')"], env={}), d)
    >>> p.wait()
    0
    >>> open(p.log_path).read()
    'hi\\n'

``stop_run(run_dir)`` sends SIGTERM to the ranks (each finishes its step, checkpoints and exits 0),
then SIGKILL to the whole process group after a grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TextIO

import jitmodel
from jitmodel.atomic import atomic_write_text
from jitplan.launch.torchrun import NodeCommand
from jitplan.runs.folders import LOG_NAME, PID_NAME, STOP_NAME, prepare_run_dir, run_name

# re-exported for callers outside launch/: their home is jitplan.runs.folders
__all__ = ["LOG_NAME", "PID_NAME", "STOP_NAME", "prepare_run_dir", "run_name"]


class LocalProcess:
    """A started node command. ``wait()`` returns its exit code once its output is fully in the log."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path, pump: threading.Thread) -> None:
        self.proc = proc
        self.log_path = log_path
        self._pump = pump

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        rc = self.proc.wait(timeout)
        self._pump.join(timeout=30)
        codes = getattr(self._pump, "rank_exitcodes", [])
        if rc == 1 and codes and all(c == 2 for c in codes):
            return 2  # every rank refused its input (exit 2): torchrun only says 1
        return rc

    def terminate(self, grace_s: float = 30.0) -> int:
        """Stop gracefully (``term_ranks``), SIGKILL the group after ``grace_s``; returns the exit code."""
        term_ranks(self.proc.pid)
        try:
            return self.wait(grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(self.proc.pid, signal.SIGKILL)
            return self.wait()


def term_ranks(torchrun_pid: int, ready_s: float = 15.0) -> list[int]:
    """SIGTERM the ranks (torchrun's child processes) only; the whole group when there are none yet.

    A rank that is still starting its interpreter has no handler yet, and a SIGTERM then kills it silently
    (rc -15, no checkpoint, no line): each rank is signalled once it handles SIGTERM (``wait_for_handler``,
    at most ``ready_s`` seconds), which it does from the first line of ``jitmodel.train`` on.

    Why not the group: torchrun answers its own SIGTERM by killing each rank's *process group*, and that
    takes the ranks' DataLoader workers down mid-step ("DataLoader worker ... killed by signal:
    Terminated", seen with torch 2.13), before the trainer can write its checkpoint. A rank that gets the
    signal alone finishes its step, checkpoints, shuts its workers down and exits 0; torchrun then exits 0.
    Returns the pids signalled.
    """
    import psutil  # type: ignore[import-untyped]  # lazy: start-up; no types-psutil stubs here

    try:
        ranks = [c.pid for c in psutil.Process(torchrun_pid).children(recursive=False)]
    except psutil.NoSuchProcess:
        return []
    sent = []
    for pid in ranks:
        wait_for_handler(pid, signal.SIGTERM, ready_s)
        try:
            os.kill(pid, signal.SIGTERM)
            sent.append(pid)
        except ProcessLookupError:
            continue
    if not sent:
        _signal_group(torchrun_pid, signal.SIGTERM)
    return sent


def wait_for_handler(pid: int, sig: int, timeout_s: float) -> bool:
    """Wait until process ``pid`` catches ``sig`` (Linux: the SigCgt mask of /proc/PID/status); True when it
    does, False after ``timeout_s``, when it is gone or where /proc cannot tell (then do not wait)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
                line = next((ln for ln in f if ln.startswith("SigCgt:")), "")
        except OSError:
            return False
        if not line:
            return False
        if int(line.split()[1], 16) >> (sig - 1) & 1:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _signal_group(pid: int, sig: int) -> bool:
    try:
        os.killpg(pid, sig)
        return True
    except ProcessLookupError:
        return False


def _pump(src: TextIO, log_path: Path, echo: TextIO | None) -> None:
    quiet = _TorchrunQuiet()
    threading.current_thread().rank_exitcodes = quiet.exitcodes  # type: ignore[attr-defined]  # read by the joiner
    with open(log_path, "a", buffering=1) as log:
        for line in src:
            log.write(line)
            if echo is not None:
                for shown in quiet.feed(line):
                    echo.write(shown)
                echo.flush()


class _TorchrunQuiet:
    """Keeps torchrun's ChildFailedError traceback and failure table out of what the user sees (the log
    keeps them): the rank already said why in its own one line. Seen with torch 2.13: a rank's exit 2 came
    back as 40 lines of torchrun traceback. Records each failed rank's exit code."""

    def __init__(self) -> None:
        self.held: list[str] = []
        self.rules_left = 0
        self.exitcodes: list[int] = []

    def feed(self, line: str) -> list[str]:
        if "exitcode  :" in line:
            try:
                self.exitcodes.append(int(line.split("exitcode  :", 1)[1].split()[0]))
            except (ValueError, IndexError):
                pass
        if self.rules_left:
            if line.startswith("====="):
                self.rules_left -= 1
            return []
        if "elastic/multiprocessing/api.py" in line and "failed (exitcode:" in line:
            return []
        if self.held or line.startswith("Traceback (most recent call last):"):
            self.held.append(line)
            if line[:1].isspace() or line.startswith("Traceback"):
                return []
            held, self.held = self.held, []
            if "ChildFailedError" in line:
                self.rules_left = 2
                return []
            return held
        return [line]


def start(cmd: NodeCommand, run_dir: str | Path, *, echo: TextIO | None = None, cwd: str | Path | None = None,
          log_name: str = LOG_NAME, env: dict[str, str] | None = None) -> LocalProcess:
    """Start ``cmd`` in a new session (so a stop reaches every rank), appending its output to the log.

    ``env`` replaces the inherited environment (default: this process's); ``cmd.env`` is added on top.
    The pid goes to ``run_dir/pid`` so ``stop_run`` works from another CLI call.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / log_name
    full_env = dict(os.environ if env is None else env)
    full_env.update(cmd.env)
    proc = subprocess.Popen(cmd.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=cwd, env=full_env, start_new_session=True)
    assert proc.stdout is not None  # for type checkers: stdout=PIPE always gives a stream
    text = open(proc.stdout.fileno(), encoding="utf-8", errors="replace", closefd=True)  # noqa: SIM115
    pump = threading.Thread(target=_pump, args=(text, log_path, echo), daemon=True)
    pump.start()
    if cmd.node_rank == 0:
        atomic_write_text(run_dir / PID_NAME, f"{proc.pid}\n")
    return LocalProcess(proc, log_path, pump)


def stop_run(run_dir: str | Path, grace_s: float = 30.0) -> bool:
    """Stop the run whose pid is in ``run_dir/pid``: SIGTERM its ranks, SIGKILL the group after ``grace_s``.

    Returns False when nothing was running. Writes ``run_dir/stop`` first so a supervisor watching the
    run knows the stop was asked for and does not restart it.
    """
    run_dir = Path(run_dir)
    try:
        pid = int((run_dir / PID_NAME).read_text().strip())
    except (FileNotFoundError, ValueError):
        return False
    if not _group_alive(pid):
        return False
    atomic_write_text(run_dir / STOP_NAME, "requested\n")
    term_ranks(pid)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _group_alive(pid):
            return True
        time.sleep(0.2)
    _signal_group(pid, signal.SIGKILL)
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def pythonpath_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with the project that holds ``jitmodel`` first on PYTHONPATH, so a rank
    started in the run folder imports the same code as this CLI."""

    env = dict(os.environ if base is None else base)
    root = str(Path(jitmodel.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return env
