"""The SSH backend against a real sshd + rsync on 127.0.0.1 (fresh host key, fresh client key)."""

from __future__ import annotations

import io
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jitplan.errors import CheckFailed, UsageError
from jitplan.launch.ssh import SSHLaunch, SSHOptions, parse_target, rsync_argv, ssh_argv
from jitplan.launch.torchrun import NodeCommand
from jitplan.transport.target import SSHTarget

SSHD = "/usr/sbin/sshd"
REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackSSH:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = _free_port()
        self.client_key = tmp / "client key"  # a space in the key path: quoting is exercised everywhere
        self.known_hosts = tmp / "known hosts"
        self.known_hosts.write_text("")
        for key in (tmp / "hostkey", self.client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        (tmp / "authorized_keys").write_text((tmp / "client key.pub").read_text())
        self.host_pub = (tmp / "hostkey.pub").read_text().split()[:2]
        cfg = tmp / "sshd_config"
        cfg.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {tmp}/hostkey\nPidFile {tmp}/sshd.pid\n"
            f"AuthorizedKeysFile {tmp}/authorized_keys\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\nStrictModes no\n"
            "Subsystem sftp internal-sftp\nPermitUserEnvironment no\n")
        os.makedirs("/run/sshd", exist_ok=True)
        subprocess.run([SSHD, "-t", "-f", str(cfg)], check=True)
        self.proc = subprocess.Popen([SSHD, "-D", "-f", str(cfg), "-E", str(tmp / "sshd.log")])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("sshd did not start")

    @property
    def target(self) -> SSHTarget:
        return SSHTarget(user="root", host="127.0.0.1", port=self.port, identity=str(self.client_key))

    def trust(self) -> None:
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {' '.join(self.host_pub)}\n")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


needs_sshd = pytest.mark.skipif(not (os.path.exists(SSHD) and shutil.which("rsync") and os.geteuid() == 0),
                                reason="needs /usr/sbin/sshd, rsync and root (CI installs openssh-server, rsync)")


@pytest.fixture
def sshd(tmp_path):
    d = tmp_path / "sshd"
    d.mkdir()
    server = LoopbackSSH(d)
    yield server
    server.close()


# ------------------------------------------------------------------ pure command building

def test_parse_target_forms_and_errors(tmp_path):
    assert parse_target("ubuntu@host.example") == SSHTarget(user="ubuntu", host="host.example", port=22)
    assert parse_target("root@1.2.3.4:2222").port == 2222
    for bad in ("host-only", "@host", "root@", "root@h:99999", "root@h:x", "-oProxyCommand=x@h", "a b@h"):
        with pytest.raises(UsageError):
            parse_target(bad)
    with pytest.raises(UsageError, match="no such key"):
        parse_target("root@h", identity=str(tmp_path / "missing"))


def test_host_keys_are_strict_by_default_and_never_no():
    t = SSHTarget(host="h")
    strict = ssh_argv(t, SSHOptions(), ["true"])
    assert "StrictHostKeyChecking=yes" in strict
    assert "StrictHostKeyChecking=accept-new" in ssh_argv(t, SSHOptions(accept_new_host_key=True), ["true"])
    for argv in (strict, ssh_argv(t, SSHOptions(accept_new_host_key=True), "x")):
        assert not any("StrictHostKeyChecking=no" in a for a in argv)
        assert not any("/dev/null" in a for a in argv)


def test_remote_words_are_quoted_so_semicolons_cannot_inject():
    job = SSHLaunch(SSHTarget(host="h"), SSHOptions(), root="/srv/my runs; rm -rf ~", run_id="r1")
    sh, c, script = shlex.split(job.mkdirs_step().argv[-1])
    assert (sh, c) == ("sh", "-c")
    assert shlex.split(script) == ["mkdir", "-p", "--", "/srv/my runs; rm -rf ~/code", "/srv/my runs; rm -rf ~/runs/r1",
                                   "/srv/my runs; rm -rf ~/data", "&&", "cd", "/srv/my runs; rm -rf ~", "&&", "pwd"]
    argv = rsync_argv(SSHTarget(host="h", identity="/k e y"), SSHOptions(known_hosts="/a b"), "src/", "/d;x/")
    e = argv[argv.index("-e") + 1]
    assert shlex.split(e)[-4:] == ["-i", "/k e y", "-o", "IdentitiesOnly=yes"]
    assert 'UserKnownHostsFile="/a b"' in shlex.split(e)


def test_run_id_must_be_a_plain_name():
    with pytest.raises(UsageError):
        SSHLaunch(SSHTarget(host="h"), SSHOptions(), root="x", run_id="../etc")


# ------------------------------------------------------------------ real sshd on loopback

@pytest.mark.net
@needs_sshd
def test_unknown_host_key_is_refused_with_a_hint(sshd):
    job = SSHLaunch(sshd.target, SSHOptions(known_hosts=str(sshd.known_hosts)), root=str(sshd.tmp / "r"), run_id="a")
    with pytest.raises(CheckFailed) as e:
        job.run(job.mkdirs_step())
    assert "accept-new-host-key" in (e.value.hint or "")
    assert sshd.known_hosts.read_text() == ""


@pytest.mark.net
@needs_sshd
@pytest.mark.slow
def test_accept_new_records_the_key_then_strict_works(sshd):
    opts = SSHOptions(known_hosts=str(sshd.known_hosts), accept_new_host_key=True)
    job = SSHLaunch(sshd.target, opts, root=str(sshd.tmp / "r"), run_id="a")
    job.run(job.mkdirs_step())
    assert sshd.host_pub[1] in sshd.known_hosts.read_text()
    strict = SSHLaunch(sshd.target, SSHOptions(known_hosts=str(sshd.known_hosts)), root="x", run_id="a")
    assert strict.run(strict.status_step()).strip() == "unknown"


@pytest.mark.net
@pytest.mark.slow
@needs_sshd
@pytest.mark.parametrize("detach", ["setsid", "tmux"])
def test_upload_start_detached_follow_and_stop_with_hostile_paths(sshd, tmp_path, detach):
    if detach == "tmux" and not shutil.which("tmux"):
        pytest.skip("tmux is not installed (the default detach is setsid/nohup)")
    sshd.trust()
    root = sshd.tmp / "remote root; touch PWNED"  # a space and a ';' in every remote path
    job = SSHLaunch(sshd.target, SSHOptions(known_hosts=str(sshd.known_hosts), python=sys.executable, detach=detach),
                    root=str(root), run_id="run one")
    local_code = tmp_path / "code"
    (local_code / "pkg").mkdir(parents=True)
    (local_code / "pkg" / "__init__.py").write_text("")
    (local_code / ".git").mkdir()
    (local_code / ".git" / "HEAD").write_text("x")
    (local_code / "runs").mkdir()
    plan = tmp_path / "train.yaml"
    plan.write_text("a: 1\n")
    from jitplan.launch.ssh import run_script_path

    job.prepare()
    job.run(job.upload_code_step(local_code))
    job.run(job.upload_files_step([plan, run_script_path()]))
    assert (root / "code" / "pkg" / "__init__.py").is_file()
    assert not (root / "code" / ".git").exists() and not (root / "code" / "runs").exists()
    assert (root / "runs" / "run one" / "train.yaml").read_text() == "a: 1\n"
    data = tmp_path / "my data" / "train" / "class a"
    data.mkdir(parents=True)
    (data / "x.png").write_bytes(b"png")
    step, remote_data = job.upload_data_step(tmp_path / "my data")
    job.run(step)
    assert remote_data == f"{root}/data/my data"
    assert (Path(remote_data) / "train" / "class a" / "x.png").read_bytes() == b"png"
    assert not list(sshd.tmp.rglob("PWNED")) and not Path.home().joinpath("PWNED").exists()

    # A worker that logs, honours SIGTERM like the trainer (message, exit 0) and sees PYTHONPATH=code.
    prog = ("import os, signal, sys, time\n"
            "signal.signal(signal.SIGTERM, lambda *a: (print('got SIGTERM, saving', flush=True), sys.exit(0)))\n"
            "print('cwd', os.path.basename(os.getcwd()), 'pkg', __import__('pkg').__name__, flush=True)\n"
            "for i in range(600):\n    print('step', i, flush=True); time.sleep(0.1)\n")
    job.start(NodeCommand(node_rank=0, argv=[sys.executable, "-c", prog], env={"JITPLAN_X": "a b;c"}))
    assert job.status() == "running"
    buf = io.StringIO()
    deadline = time.monotonic() + 60  # follow a while, then detach from the log (the run goes on); a busy box
    while "step 0" not in buf.getvalue() and time.monotonic() < deadline:  # may need more than one try
        job.follow(buf, timeout_s=2.0)
    assert "cwd run one pkg pkg" in buf.getvalue() and "step 0" in buf.getvalue()
    assert job.status() == "running"
    assert job.stop() == 0
    log = (root / "runs" / "run one" / "train.log").read_text()
    assert "got SIGTERM, saving" in log
    assert job.status() == "exited 0"


# ------------------------------------------------------------------ `jitplan launch --ssh` end to end

def _tiny_plan(path: Path, max_steps: int) -> Path:
    import yaml
    from conftest import plan_for_tiny_recipe

    from jitplan.schemas import save_plan

    train = {"model": {"variant": "JiT-Tiny/4", "img_size": 16, "in_channels": 1, "num_classes": 10},
             "data": {"kind": "digits", "num_workers": 1, "persistent_workers": False},
             "batch_per_gpu": 16, "max_steps": max_steps, "optim": {"warmup_epochs": 0},
             "checkpoint": {"every_steps": 2}, "log_every": 1, "device": "cpu"}
    plan = plan_for_tiny_recipe(train)  # the planner's own train section for the tiny recipe
    assert (plan.train.batch_per_gpu, plan.train.data.num_workers) == (16, 1)
    save_plan(plan, path)
    assert yaml.safe_load(path.read_text())["train"]["max_steps"] == max_steps
    return path


@pytest.fixture
def launch_env(tmp_path, monkeypatch):
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


@pytest.mark.net
@pytest.mark.slow
@needs_sshd
def test_cli_launch_over_ssh_trains_detached_then_follow_and_stop(cli, sshd, tmp_path, launch_env):
    sshd.trust()
    plan = _tiny_plan(tmp_path / "plan.yaml", max_steps=2000)
    # A relative remote root (the default kind: under the remote home, here root's own) with a ';' in it.
    rel = f".jitplan-test-{os.getpid()}-{time.time_ns()}; touch PWNED"
    root = Path.home() / rel
    try:
        _launch_detach_follow_stop(cli, sshd, tmp_path, plan, rel, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _launch_detach_follow_stop(cli, sshd, tmp_path: Path, plan: Path, rel: str, root: Path) -> None:
    import json

    from jitplan.runs.registry import Registry

    r = cli("launch", str(plan), "--ssh", f"root@127.0.0.1:{sshd.port}", "--identity", str(sshd.client_key),
            "--known-hosts", str(sshd.known_hosts), "--remote-dir", rel, "--remote-python", sys.executable,
            "--no-doctor", "--detach", "--run-dir", str(tmp_path / "staged"), "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["status"] == "running" and res["remote_run_dir"].startswith(str(root))
    remote = Path(res["remote_run_dir"])
    assert (root / "code" / "jitmodel" / "train.py").is_file() and not (root / "code" / ".git").exists()
    assert yaml_load(remote / "plan.yaml")["train"]["output_dir"] == "out"

    job = SSHLaunch(sshd.target, SSHOptions(known_hosts=str(sshd.known_hosts)), root=str(root), run_id=res["name"])
    buf = io.StringIO()
    deadline = time.monotonic() + 180
    while "step 2 " not in buf.getvalue() and time.monotonic() < deadline:  # follow until a checkpoint is due
        job.follow(buf, timeout_s=2.0)
    assert "step 2 " in buf.getvalue(), buf.getvalue()[-2000:]
    r = cli("stop", res["run_id"])  # `jitplan stop` finds the remote run from what the launcher recorded
    assert r.code == 0, r.err
    assert job.status() == "exited 0"  # SIGTERM to the rank: it checkpointed and exited 0, and so did torchrun
    log = (remote / "train.log").read_text()
    assert "stopped by SIGTERM" in log and (remote / "out" / "last.pt").is_file() and (remote / "stop").exists()
    assert not list(sshd.tmp.rglob("PWNED")) and not (Path.home() / "PWNED").exists() and not Path("PWNED").exists()
    kinds = [e.kind for e in Registry().events(res["run_id"])]
    assert ["upload_code", "upload_files", "python_env", "start"] == [
        k for k in kinds if k in ("upload_code", "upload_files", "python_env", "start")]


@pytest.mark.net
@pytest.mark.slow
@needs_sshd
def test_cli_launch_over_ssh_runs_the_remote_doctor_first(cli, sshd, tmp_path, launch_env):
    sshd.trust()
    plan = _tiny_plan(tmp_path / "plan.yaml", max_steps=4)
    root = sshd.tmp / "remote"
    r = cli("launch", str(plan), "--ssh", f"root@127.0.0.1:{sshd.port}", "--identity", str(sshd.client_key),
            "--known-hosts", str(sshd.known_hosts), "--remote-dir", str(root), "--remote-python", sys.executable,
            "--run-dir", str(tmp_path / "staged"))
    # This machine has no GPU for an RTX 3060 plan: the remote doctor fails, and nothing is started.
    assert r.code == 1 and "remote doctor failed" in r.err, r.err
    assert not list(root.glob("runs/*/pid"))


def yaml_load(path: Path):
    import yaml

    return yaml.safe_load(path.read_text())


@pytest.mark.net
@needs_sshd
def test_a_remote_python_without_torch_is_refused_with_the_fixes(sshd, tmp_path):
    sshd.trust()
    job = SSHLaunch(sshd.target, SSHOptions(known_hosts=str(sshd.known_hosts), python="/bin/false"),
                    root=str(sshd.tmp / "r"), run_id="a")
    job.prepare()
    with pytest.raises(CheckFailed) as e:
        job.ensure_env(create=False)
    assert "check python env failed" in e.value.message
    assert "--create-env" in e.value.hint and "--remote-python" in e.value.hint


@pytest.mark.net
@pytest.mark.slow
@needs_sshd
def test_a_users_model_file_travels_with_the_run_over_ssh(cli, sshd, tmp_path, launch_env):
    """A plan naming a factory in a local file (``plan --gpus cpu --model mine/net.py:make``) trains over SSH:
    the file and its siblings are copied into the run folder's model/ and the staged config names them at the
    remote path, so the remote trainer builds the same network (the recorded source digest still holds)."""
    import json

    import yaml

    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "examples" / "models" / "my_denoiser.py", mine / "net.py")
    (mine / "helper.py").write_text("X = 1\n")  # a sibling the digest covers: it travels too
    kw = ["--model-arg", "input_size=8", "--model-arg", "dim=32", "--model-arg", "depth=1", "--model-arg", "heads=2",
          "--model-arg", "patch=2"]
    assert cli("plan", "--gpus", "cpu", "--model", "mine/net.py:make", *kw, "--out", "cpu.yaml").code == 0
    raw = yaml.safe_load((tmp_path / "cpu.yaml").read_text())
    raw.update(max_steps=3, log_every=1)
    (tmp_path / "cpu.yaml").write_text(yaml.safe_dump(raw))
    sshd.trust()
    root = sshd.tmp / "remote"
    r = cli("launch", "cpu.yaml", "--ssh", f"root@127.0.0.1:{sshd.port}", "--identity", str(sshd.client_key),
            "--known-hosts", str(sshd.known_hosts), "--remote-dir", str(root), "--remote-python", sys.executable,
            "--no-doctor", "--run-dir", str(tmp_path / "staged"), "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    remote = Path(res["remote_run_dir"])
    assert (remote / "model" / "net.py").read_text() == (mine / "net.py").read_text()
    assert (remote / "model" / "helper.py").is_file()
    staged = yaml_load(remote / "train.yaml")["model"]
    assert staged["factory"] == f"{remote}/model/net.py:make"
    assert staged["source_digest"] == raw["model"]["source_digest"]
    from jitmodel import checkpoint as C

    ck = C.load_checkpoint(remote / "out" / "last.pt")
    assert ck["step"] == 3 and C.checkpoint_model_config(ck).factory == staged["factory"]
