"""Hostile input through every entry point: exit code, one error line, no traceback, bounded time and memory.

Hand-written hostile configs (issue 13's list: .inf, 1e400, huge sizes/classes/seeds, billion laughs,
UTF-16/Latin-1/binary, 20,000-deep nesting, a 1 MB string, "16" for an int, duplicate keys, a missing
model.variant), hostile datasets (link loops, bad images, broken class folders) and hostile checkpoints
(a folder, /dev/null, junk, truncated, flipped bytes, a malicious pickle), plus hypothesis-generated
configs and bytes. Mostly in-process (the CLIs' own ``run``); a few representative cases run as
subprocesses under an address-space limit.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
BASE = {"model": {"variant": "JiT-Tiny/4", "img_size": 8, "num_classes": 3}, "data": {"kind": "digits"}}


def _laughs() -> str:
    text, prev = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n', "a"
    for n in "bcdefghi":
        text += f"{n}: &{n} [" + ",".join(["*" + prev] * 9) + "]\n"
        prev = n
    return text


def _cfg(**over) -> str:
    raw = {k: dict(v) for k, v in BASE.items()}
    for k, v in over.items():
        if "." in k:
            a, b = k.split(".")
            raw[a] = {**raw.get(a, {}), b: v}
        else:
            raw[k] = v
    return yaml.safe_dump(raw)


# name -> (file content, words the one error line must hold)
HOSTILE_TEXT: dict[str, tuple[str | bytes, str]] = {
    "epochs_inf": (_cfg(epochs=float("inf")), "epochs"),
    "epochs_1e400": (_cfg().replace("data:", "epochs: 1e400\ndata:"), "epochs"),
    "img_size_huge": (_cfg(**{"model.img_size": 100_000_000}), "img_size"),
    "num_classes_huge": (_cfg(**{"model.num_classes": 1_000_000_000}), "num_classes"),
    "seed_huge": (_cfg(seed=10**30), "seed"),
    "lr_inf": (_cfg(**{"optim.lr": float("inf")}), "optim.lr"),
    "lr_nan": (_cfg(**{"optim.lr": float("nan")}), "optim.lr"),
    "lr_huge": (_cfg(**{"optim.lr": 1e6}), "optim.lr"),
    "batch_string": (_cfg(batch_per_gpu="16"), "batch_per_gpu"),
    "batch_negative": (_cfg(batch_per_gpu=-1), "batch_per_gpu"),
    "no_variant": (yaml.safe_dump({"model": {"img_size": 8}, "data": {"kind": "digits"}}), "model.variant"),
    "no_model": (yaml.safe_dump({"data": {"kind": "digits"}}), "model.variant"),
    "unknown_key": (_cfg(bogus=1), "bogus"),
    "huge_string": (_cfg(**{"model.variant": "x" * 200_000}), "variant"),
    "duplicate_keys": ("epochs: 1\nepochs: 2\n" + _cfg(), "twice"),
    "billion_laughs": (_laughs(), "billion laughs"),
    "deep_nesting": ("a: " + "[" * 20_000 + "]" * 20_000 + "\n", "nesting deeper"),
    "utf16": (_cfg().encode("utf-16"), "not UTF-8"),
    "latin1": ("data: {kind: digits}\nname: caf\xe9\n".encode("latin-1"), "not UTF-8"),
    "binary": (bytes(range(256)) * 8, "not UTF-8"),
    "one_mb": ("a: '" + "x" * (1 << 20) + "'\n", "larger than"),
    "not_yaml": ("a: [1, 2\n", "not valid YAML"),
    "a_list": ("- 1\n- 2\n", "mapping"),
    "empty": ("", "mapping"),
}
YAML_LEVEL = ("duplicate_keys", "billion_laughs", "deep_nesting", "utf16", "latin1", "binary", "one_mb",
              "not_yaml", "a_list", "empty")

# entry point -> argv (FILE stands for the hostile file); all in-process
JITPLAN_ENTRIES = {
    "doctor --plan": ["doctor", "--plan", "FILE"],
    "launch --local --dry-run": ["launch", "FILE", "--local", "--dry-run"],
    "compare": ["compare", "FILE", "--objectives", "x,v", "--steps", "1"],  # every case is refused before anything runs
}
YAML_ENTRIES = {  # files of another schema: only the YAML-level cases apply
    "plan --hardware": ["plan", "--hardware", "FILE"],
    "plan --recipe": ["plan", "--recipe", "FILE", "--gpus", "1xRTX4090"],
}


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / f"{name}.yaml"
    (p.write_bytes if isinstance(content, bytes) else p.write_text)(content)
    return p


def _assert_one_line_error(code: int, err: str, want_code: int = 2, words: str | None = None) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error: ")]
    assert code == want_code, err[-600:]
    assert "Traceback" not in err and len(errors) == 1, err[-600:]
    assert all(ln.startswith(("Error: ", "hint: ")) for ln in lines), err[-600:]
    assert len(errors[0]) <= 520
    if words:
        assert words.lower() in errors[0].lower(), errors[0]


def _bounded(fn, seconds: float = 30.0, mib: int = 1024):
    """Run fn; fail past a generous wall-clock bound (71 s before) or a growth of the process's peak RSS
    (6.2 GB before). Heavy modules are imported once beforehand (``_warm``)."""
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    out = fn()
    assert time.perf_counter() - t0 < seconds
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < mib * 1024
    return out


@pytest.fixture(scope="module", autouse=True)
def _warm():
    import torch  # noqa: F401

    import jitmodel.sample  # noqa: F401
    import jitmodel.train  # noqa: F401
    import jitplan.cli  # noqa: F401


# --------------------------------------------------------------------------------------------- configs

@pytest.mark.parametrize("case", sorted(HOSTILE_TEXT))
def test_hostile_config_jitmodel_train(case, tmp_path, capsys):
    from jitmodel.cli import run

    content, words = HOSTILE_TEXT[case]
    f = _write(tmp_path, case, content)
    code = _bounded(lambda: run(["train", "--config", str(f)]))
    _assert_one_line_error(code, capsys.readouterr().err, words=words)


@pytest.mark.parametrize("entry", sorted(JITPLAN_ENTRIES))
@pytest.mark.parametrize("case", sorted(HOSTILE_TEXT))
def test_hostile_config_jitplan(entry, case, tmp_path, cli, monkeypatch):
    content, words = HOSTILE_TEXT[case]
    f = _write(tmp_path, case, content)
    monkeypatch.chdir(tmp_path)
    argv = [str(f) if a == "FILE" else a for a in JITPLAN_ENTRIES[entry]]
    r = _bounded(lambda: cli(*argv))
    _assert_one_line_error(r.code, r.err, words=words if case in YAML_LEVEL else None)


@pytest.mark.parametrize("entry", sorted(YAML_ENTRIES))
@pytest.mark.parametrize("case", YAML_LEVEL)
def test_hostile_yaml_plan_inputs(entry, case, tmp_path, cli):
    content, words = HOSTILE_TEXT[case]
    f = _write(tmp_path, case, content)
    argv = [str(f) if a == "FILE" else a for a in YAML_ENTRIES[entry]]
    r = _bounded(lambda: cli(*argv))
    _assert_one_line_error(r.code, r.err)


_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30))
_FIELDS = ["epochs", "seed", "batch_per_gpu", "accum_steps", "max_steps", "world_size", "log_every",
           "model.img_size", "model.num_classes", "model.in_channels", "model.variant", "optim.lr", "optim.blr",
           "optim.warmup_epochs", "data.num_workers", "diffusion.P_std", "sample.steps", "checkpoint.keep_last"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.dictionaries(st.sampled_from(_FIELDS), _scalars, min_size=1, max_size=4))
def test_hypothesis_configs_validate_or_fail_in_one_line(fields, tmp_path):
    from jitmodel.config import load_train_config

    f = tmp_path / "h.yaml"
    f.write_text(_cfg(**fields))
    try:
        cfg = load_train_config(f)
    except ValueError as e:
        msg = str(e) if not hasattr(e, "errors") else "x"
        assert "\n" not in msg or hasattr(e, "errors")
        return
    assert cfg.model.img_size <= 4096 and cfg.model.num_classes <= 100_000 and cfg.seed < 2**31
    assert 0 < cfg.epochs <= 100_000 and (cfg.optim.lr is None or 0 < cfg.optim.lr <= 1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_hypothesis_bytes_through_the_yaml_reader(data, tmp_path):
    from jitmodel.config import read_yaml_mapping

    f = tmp_path / "b.yaml"
    f.write_bytes(data)
    try:
        assert isinstance(read_yaml_mapping(f), dict)
    except ValueError as e:
        assert "\n" not in str(e) and len(str(e)) < 600


# --------------------------------------------------------------------------------------------- datasets

def _png(p: Path, v: int = 0) -> None:
    from PIL import Image

    p.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (v, 0, 0)).save(p)


def _dataset(root: Path, kind: str) -> Path:
    for c in ("c0", "c1", "c2"):
        for i in range(8):
            _png(root / "train" / c / f"{i}.png", i)
    t = root / "train"
    if kind == "loops":
        os.symlink(".", t / "c0" / "loop")
        os.symlink("..", t / "c1" / "up")
    elif kind == "looping_class":
        os.symlink("c3", t / "c3")
    elif kind == "class_links_root":
        os.symlink(".", t / "c3")
    elif kind == "bad_images":
        (t / "c0" / "zero.png").write_bytes(b"")
        (t / "c1" / "text.png").write_text("not an image")
        (t / "c2" / "trunc.png").write_bytes((t / "c2" / "0.png").read_bytes()[:40])
    return root


@pytest.mark.parametrize("kind", ["loops", "looping_class", "class_links_root", "bad_images"])
def test_hostile_datasets_inspect_verify_agree_with_the_trainer(kind, tmp_path, cli):
    from jitmodel.config import DataConfig
    from jitmodel.data import build_dataset

    root = _dataset(tmp_path / "d", kind)
    r = _bounded(lambda: cli("data", "inspect", str(root), "--json"))
    assert r.code == 0 and "Traceback" not in r.err
    v = _bounded(lambda: cli("data", "verify", str(root), "--workers", "1"))
    if kind in ("looping_class", "class_links_root"):
        _assert_one_line_error(v.code, v.err, 2, words="c3")
        with pytest.raises(ValueError, match="c3"):
            build_dataset(DataConfig(path=str(root)), img_size=8)
        return
    if kind == "bad_images":
        assert v.code == 1 and "Traceback" not in v.err and v.err.count("\nError: ") == 1
        assert "Error: 3 of 27 images do not decode" in v.err  # after one "bad image:" note per file
        with pytest.raises(ValueError, match=r"3 image\(s\) .* do not decode"):
            build_dataset(DataConfig(path=str(root)), img_size=8)
        assert len(build_dataset(DataConfig(path=str(root), skip_bad=True), img_size=8)) == 24
        return
    assert v.code == 0
    import json

    rep = json.loads(r.out)
    ds = build_dataset(DataConfig(path=str(root)), img_size=8)
    assert (rep["images"], rep["class_names"]) == (len(ds), ds.classes) == (24, ["c0", "c1", "c2"])


# --------------------------------------------------------------------------------------------- checkpoints

class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _hostile_ckpt(tmp_path: Path, kind: str) -> Path:
    import torch

    p = tmp_path / f"{kind}.pt"
    if kind == "folder":
        p.mkdir()
    elif kind == "dev_null":
        return Path("/dev/null")
    elif kind == "zero_bytes":
        p.write_bytes(b"")
    elif kind == "junk":
        p.write_bytes(os.urandom(4096))
    elif kind == "evil_pickle":
        torch.save({"model": {}, "x": _Evil()}, p)
    elif kind in ("truncated", "flipped"):
        from jitmodel.checkpoint import atomic_save
        from jitmodel.integrity import digests

        ck = {"format": "jitmodel-checkpoint", "format_version": 1, "step": 1,
              "model": {"net.w": torch.full((256,), 1.2345)}, "model_config": BASE["model"]}
        ck["digests"] = digests(ck)
        atomic_save(ck, p)
        raw = bytearray(p.read_bytes())
        if kind == "truncated":
            raw = raw[: len(raw) // 2]
        else:
            at = raw.find(torch.full((4,), 1.2345).numpy().tobytes())
            for i in range(64):
                raw[at + i] ^= 0xFF
        p.write_bytes(bytes(raw))
    return p


CKPTS = ["folder", "dev_null", "zero_bytes", "junk", "evil_pickle", "truncated", "flipped"]


@pytest.mark.parametrize("kind", CKPTS)
def test_hostile_checkpoints_jitmodel_sample(kind, tmp_path, capsys, monkeypatch):
    from jitmodel.cli import run

    monkeypatch.chdir(tmp_path)
    p = _hostile_ckpt(tmp_path, kind)
    code = _bounded(lambda: run(["sample", "--ckpt", str(p), "--random", "--device", "cpu", "--steps", "1"]))
    _assert_one_line_error(code, capsys.readouterr().err, 2)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("kind", CKPTS)
def test_hostile_checkpoints_doctor_reader(kind, tmp_path):
    """doctor --checkpoint's reader: a UsageError line or a summary, never a crash (C11 reports it)."""
    from jitplan.doctor.ckpt import read_checkpoint
    from jitplan.errors import UsageError

    p = _hostile_ckpt(tmp_path, kind)
    try:
        read_checkpoint(p)
    except UsageError as e:
        assert "\n" not in e.message
    assert not (tmp_path / "PWNED").exists()


# --------------------------------------------------------------------------------------------- subprocesses

def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))  # 6.2 GB before the fix


def _sub(argv: list[str], tmp_path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=env,
                          preexec_fn=_limited)


@pytest.mark.parametrize("argv", [
    [sys.executable, "-m", "jitmodel.train", "--config", "FILE"],
    [sys.executable, "-c", "from jitplan.cli import main; main()", "doctor", "--plan", "FILE"],
], ids=["python -m jitmodel.train", "jitplan doctor --plan"])
def test_billion_laughs_in_a_fresh_process_under_a_memory_limit(argv, tmp_path):
    f = _write(tmp_path, "laughs", _laughs())
    r = _sub([str(f) if a == "FILE" else a for a in argv], tmp_path)
    _assert_one_line_error(r.returncode, r.stderr, words="billion laughs")


def test_sample_on_a_folder_in_a_fresh_process(tmp_path):
    r = _sub([sys.executable, "-m", "jitmodel", "sample", "--ckpt", str(tmp_path), "--random"], tmp_path)
    _assert_one_line_error(r.returncode, r.stderr, words="is a folder")


def _catches_sigterm(pid: int) -> bool:
    try:
        line = next(ln for ln in open(f"/proc/{pid}/status") if ln.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(int(line.split()[1], 16) & (1 << (15 - 1)))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_sigterm_while_the_trainer_starts_ends_cleanly(tmp_path):
    """The handler is in place before torch is imported; a SIGTERM then ends in one line and exit 0."""
    import signal

    f = tmp_path / "t.yaml"
    f.write_text(_cfg(output_dir=str(tmp_path / "out"), max_steps=1,
                      **{"data.num_workers": 0, "model.num_classes": 10}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-m", "jitmodel.train", "--config", str(f)], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not _catches_sigterm(p.pid) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.005)
    torch_loaded = "torch" in Path(f"/proc/{p.pid}/maps").read_text()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert not torch_loaded  # the handler came before the slow import
    assert p.returncode == 0, err[-500:]
    assert "Traceback" not in err and "stopped by SIGTERM before the first step" in err


TORCHRUN_FAILURE = """Error: invalid config: seed: Input should be less than or equal to 2147483647
E1202 18:51:18.117000 23777 site-packages/torch/distributed/elastic/multiprocessing/api.py:1002] \
failed (exitcode: 2) local_rank: 0 (pid: 23822) of binary: python3.11
Traceback (most recent call last):
  File "/usr/bin/torchrun", line 8, in <module>
    sys.exit(main())
  File "torch/distributed/launcher/api.py", line 383, in launch_agent
    raise ChildFailedError(
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
jitmodel.train FAILED
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  rank      : 0 (local_rank: 0)
  exitcode  : 2 (pid: 23822)
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
============================================================
step 3 after the table is shown again
Traceback (most recent call last):
  File "x.py", line 1, in <module>
ZeroDivisionError: division by zero
"""


def test_launch_shows_the_trainer_line_not_torchruns_traceback():
    """launch --local echoes the rank's own Error: line; torchrun's ChildFailedError block stays in the log."""
    from jitplan.launch.local import _TorchrunQuiet

    q = _TorchrunQuiet()
    shown = "".join(x for line in TORCHRUN_FAILURE.splitlines(keepends=True) for x in q.feed(line))
    assert shown.splitlines()[0].startswith("Error: invalid config: seed")
    assert "ChildFailedError" not in shown and "exitcode" not in shown and "=====" not in shown
    assert "step 3 after the table" in shown and "ZeroDivisionError" in shown  # other tracebacks still shown
    assert q.exitcodes == [2]


def test_half_installed_torch_is_C1_not_a_crash(tmp_path, monkeypatch):
    """torch's package folder present but version.py missing (an interrupted install): C1 fails, no traceback."""
    from jitplan.doctor.runner import run_doctor
    from jitplan.hardware.nvml_fake import FakeNvml

    fake = tmp_path / "site" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('half installed')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "JITPLAN_CACHE_DIR": str(tmp_path / "cache")}
    r = run_doctor(nvml=FakeNvml.from_file(ROOT / "tests/data/nvml/no_driver.yaml"), cache=True, env=env)
    f = r.by_id("C1")
    assert f.level == "fail" and "half installed" in f.found  # (version.py named when torch is not imported here)


def test_a_check_that_raises_is_a_fail_finding(monkeypatch):
    from jitplan.doctor import runner
    from jitplan.hardware.nvml_fake import FakeNvml

    def boom(ctx):
        """C9: cpus"""
        raise RuntimeError("kaput\nsecond line")
    monkeypatch.setattr(runner, "CHECKS", [(cid, boom if cid == "C13" else fn) for cid, fn in runner.CHECKS])
    r = runner.run_doctor(nvml=FakeNvml.from_file(ROOT / "tests/data/nvml/no_driver.yaml"), run_torch=False)
    f = r.by_id("C13")
    assert f.level == "fail" and f.found == "the check itself failed: RuntimeError: kaput"
