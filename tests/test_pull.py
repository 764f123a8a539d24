"""Pulls over a real sshd + rsync on 127.0.0.1: the checkpoint comes home verified (remote sha256 = local
sha256, loads weights-only), a bad or changed one is refused and never replaces the last good pull, and
`jitplan stop --destroy` refuses to destroy when the pull fails unless --discard."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from fakes.sshd import Remote, sshd_available

from jitplan.launch import pull as pull_mod
from jitplan.launch.pull import PullFailed, parse_snapshot, pull, sha256_file
from jitplan.launch.ssh import SSHLaunch, SSHOptions
from jitplan.runs.registry import Registry

needs_sshd = pytest.mark.skipif(not sshd_available(), reason="needs /usr/sbin/sshd, rsync and root")
KEY = "SENTINEL-pull-key-5e4d3c2b1a"


def write_checkpoint(path: Path, step: int) -> None:
    """A small checkpoint in the trainer's format, written the trainer's way (atomic, last.pt a link)."""
    import torch

    from jitmodel.checkpoint import FORMAT, atomic_link, atomic_save

    ck = {"format": FORMAT, "format_version": 1, "step": step, "model": {"w": torch.full((64, 64), float(step))}}
    step_file = atomic_save(ck, path / "ckpt" / f"{step:07d}.pt")
    atomic_link(step_file, path / "last.pt")


def test_parse_snapshot_answers() -> None:
    assert parse_snapshot("ckpt none\n") is None
    with pytest.raises(ValueError, match="does not exist"):
        parse_snapshot("nofolder\n")
    with pytest.raises(ValueError, match="unexpected"):
        parse_snapshot("sh: sha256sum: not found\n")


@pytest.mark.net
@needs_sshd
@pytest.mark.slow
def test_pull_brings_the_checkpoint_metrics_and_logs_home_verified(remote, tmp_path) -> None:
    job = remote.job()
    rdir = Path(job.run_dir)
    write_checkpoint(rdir / "out", 7)
    (rdir / "out" / "metrics.jsonl").write_text('{"step": 7, "loss": 0.5}\n')
    (rdir / "train.log").write_text("step 7 loss 0.5\n")
    local = tmp_path / "local run"
    res = pull(job, local)
    assert res.step == 7 and res.checkpoint == str(local / "out" / "last.pt")
    assert sha256_file(local / "out" / "last.pt") == sha256_file(rdir / "out" / "last.pt") == res.sha256
    assert (local / "out" / "ckpt" / "0000007.pt").samefile(local / "out" / "last.pt")
    assert (local / "out" / "metrics.jsonl").read_text() == '{"step": 7, "loss": 0.5}\n'
    assert (local / "train.log").read_text() == "step 7 loss 0.5\n"
    assert json.loads((local / "pulled.json").read_text())["step"] == 7
    assert res.tensor_digests == "absent"  # written without digests
    assert not (local / "out" / "ckpt" / "0000006.pt").exists() and not (local / "code").exists()

    # a newer checkpoint: the next pull brings it; the older pulled step file stays
    write_checkpoint(rdir / "out", 9)
    assert pull(job, local).step == 9
    assert sorted(p.name for p in (local / "out" / "ckpt").iterdir()) == ["0000007.pt", "0000009.pt"]


@pytest.mark.net
@needs_sshd
@pytest.mark.slow
def test_a_newer_checkpoint_of_the_same_size_and_second_is_pulled(remote, tmp_path) -> None:
    """Two checkpoints of one model have one size, and a fast run writes them within a second: rsync's quick
    check (size + mtime) would keep the old local copy, and the pull would fail its sha256 check, so a teardown
    refused to destroy a finished run (seen in the full suite under load)."""
    import os

    job = remote.job()
    out = Path(job.run_dir) / "out"
    write_checkpoint(out, 20)
    local = tmp_path / "local run"
    assert pull(job, local).step == 20
    stamp = os.stat(out / "last.pt").st_mtime_ns
    write_checkpoint(out, 30)
    os.utime(out / "last.pt", ns=(stamp, stamp))  # same second, same size: what rsync's quick check compares
    assert (out / "last.pt").stat().st_size == (local / "out" / "last.pt").stat().st_size
    res = pull(job, local)
    assert res.step == 30 and sha256_file(local / "out" / "last.pt") == sha256_file(out / "last.pt")
    assert (local / "out" / "ckpt" / "0000020.pt").is_file()  # the earlier verified pull is kept


@pytest.mark.net
@needs_sshd
@pytest.mark.slow
def test_a_checkpoint_that_does_not_load_is_refused_and_the_last_good_pull_stays(remote, tmp_path) -> None:
    job = remote.job()
    rdir = Path(job.run_dir)
    write_checkpoint(rdir / "out", 3)
    local = tmp_path / "local"
    good = pull(job, local).sha256
    (rdir / "out" / "last.pt").unlink()
    (rdir / "out" / "last.pt").write_bytes(b"PK\x03\x04 this is not a torch checkpoint" * 100)
    with pytest.raises(PullFailed, match="not usable: it does not load") as e:
        pull(job, local)
    assert e.value.not_saved == ("the checkpoint",)
    assert sha256_file(local / "out" / "last.pt") == good  # never replaced by the bad one


@pytest.mark.net
@needs_sshd
@pytest.mark.slow
def test_a_checkpoint_whose_tensors_do_not_match_their_digests_is_refused(remote, tmp_path) -> None:
    import torch

    from jitmodel import integrity
    from jitmodel.checkpoint import FORMAT, atomic_save

    job = remote.job()
    ck = {"format": FORMAT, "format_version": 1, "step": 8, "model": {"w": torch.ones(32, 32)}}
    ck["digests"] = integrity.digests(ck)
    good = tmp_path / "good"
    atomic_save(ck, Path(job.run_dir) / "out" / "last.pt")
    assert pull(job, good).tensor_digests == "verified"
    ck["model"]["w"][3, 3] = 2.0  # rot at rest on the remote: the file's own sha256 is consistent, the digest not
    atomic_save(ck, Path(job.run_dir) / "out" / "last.pt")
    with pytest.raises(PullFailed, match="not usable"):
        pull(job, tmp_path / "bad")
    assert not (tmp_path / "bad" / "out" / "last.pt").exists()


@pytest.mark.net
@needs_sshd
@pytest.mark.slow
def test_a_checkpoint_changed_after_hashing_is_refused(remote, tmp_path, monkeypatch) -> None:
    job = remote.job()
    write_checkpoint(Path(job.run_dir) / "out", 5)
    real = pull_mod.snapshot_script
    # the file changes on the remote between its sha256 and the transfer (bit rot, a second writer)
    monkeypatch.setattr(pull_mod, "snapshot_script", lambda d: real(d) + "; printf x >> .pull/last.pt")
    with pytest.raises(PullFailed, match="differs from the remote file"):
        pull(job, tmp_path / "local")
    assert not (tmp_path / "local" / "out" / "last.pt").exists()


@pytest.mark.net
@needs_sshd
@pytest.mark.slow
def test_pull_with_no_checkpoint_yet_brings_the_logs(remote, tmp_path) -> None:
    job = remote.job()
    (Path(job.run_dir) / "train.log").write_text("starting\n")
    res = pull(job, tmp_path / "l")
    assert res.checkpoint is None and res.files == ["train.log"] and "no checkpoint" in res.message


@pytest.mark.net
@needs_sshd
def test_unreachable_or_missing_remote_is_a_pull_failure(remote, tmp_path) -> None:
    job = SSHLaunch(remote.target, SSHOptions(known_hosts=str(remote.known_hosts)), root=str(remote.root),
                    run_id="never-made")
    with pytest.raises(PullFailed, match="remote run folder does not exist"):
        pull(job, tmp_path / "l")
    remote.sshd.__exit__()
    with pytest.raises(PullFailed, match="snapshot checkpoint failed") as e:
        pull(remote.job(), tmp_path / "l")
    assert "the checkpoint" in e.value.not_saved


# ------------------------------------------------------------------------------ the CLI and the guard
@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "jp"))
    monkeypatch.setenv("VAST_API_KEY", KEY)
    return Registry()


def _vast_run(reg: Registry, remote: Remote, fake, local: Path) -> tuple[str, int]:
    from pydantic import SecretStr

    from jitplan.providers import CreateSpec
    from jitplan.providers.vast.client import VastClient

    fake.add_offer(2001, num_gpus=1)
    iid = VastClient(SecretStr(KEY), server_url=fake.url).create(
        CreateSpec(offer_id=2001, image="img", disk_gb=50, label="jitplan-t-1"))
    job = remote.job("jit-tiny")
    rid = reg.create_run("jit-tiny", "vast", status="running", host=str(remote.target))
    from jitplan.runs.registry import RunMeta

    meta = RunMeta(ssh=str(remote.target), remote_root=str(remote.root), remote_run_id="jit-tiny",
                   identity=str(remote.key), known_hosts=str(remote.known_hosts), local_run_dir=str(local))
    reg.update_run(rid, run_dir=job.run_dir, meta=meta)
    reg.cloud.add_instance(rid, "vast", iid, "jitplan-t-1", 0.2, status="running")
    reg.set_status(rid, "finished")  # nothing to stop: the test is about the pull and the destroy
    return rid, iid


@pytest.mark.net
@needs_sshd
@pytest.mark.slow
def test_cli_pull_then_stop_destroy_pulls_first_and_refuses_when_the_pull_fails(cli, env, remote, tmp_path,
                                                                               monkeypatch) -> None:
    pytest.importorskip("vastai", reason="the vastai SDK (jitplan[vast]) is not installed")
    from fakes.vast_server import VastFake

    local = tmp_path / "staged"
    with VastFake(KEY) as fake:
        monkeypatch.setenv("VAST_URL", fake.url)
        rid, iid = _vast_run(env, remote, fake, local)
        rdir = Path(env.get_run(rid).run_dir)
        write_checkpoint(rdir / "out", 4)
        r = cli("pull", rid, "--json")
        assert r.code == 0, r.err
        assert json.loads(r.out)["step"] == 4 and (local / "out" / "ckpt" / "0000004.pt").is_file()

        write_checkpoint(rdir / "out", 6)
        (rdir / "out" / "last.pt").unlink()
        (rdir / "out" / "last.pt").write_bytes(b"garbage")  # the newest checkpoint is broken: refuse
        r = cli("stop", rid, "--destroy", "--yes")
        assert r.code == 1 and "not destroying run" in r.err and "not saved: the newest checkpoint" in r.err
        assert "last verified pull is step 4" in r.err and "--discard" in r.err and "Traceback" not in r.err
        assert fake.deletes() == [] and len(fake.live()) == 1

        write_checkpoint(rdir / "out", 8)  # fixed: the destroy pulls step 8 first, then destroys
        r = cli("stop", rid, "--destroy", "--yes")
        assert r.code == 0, r.err
        assert fake.live() == [] and [d.path for d in fake.deletes()] == [f"/api/v0/instances/{iid}/"]
    assert (local / "out" / "ckpt" / "0000008.pt").samefile(local / "out" / "last.pt")
    kinds = [e.kind for e in env.events(rid)]
    assert kinds.index("pulled", kinds.index("pull-failed")) < kinds.index("destroy")


@pytest.mark.net
@needs_sshd
@pytest.mark.slow
def test_stop_destroy_discard_destroys_without_a_pull_and_says_what_was_lost(cli, env, remote, tmp_path,
                                                                           monkeypatch) -> None:
    pytest.importorskip("vastai", reason="the vastai SDK (jitplan[vast]) is not installed")
    from fakes.vast_server import VastFake

    with VastFake(KEY) as fake:
        monkeypatch.setenv("VAST_URL", fake.url)
        rid, iid = _vast_run(env, remote, fake, tmp_path / "staged")
        remote.sshd.__exit__()  # the host stops answering
        r = cli("stop", rid, "--destroy", "--yes")
        assert r.code == 1 and "not destroying" in r.err and len(fake.live()) == 1
        r = cli("stop", rid, "--destroy", "--yes", "--discard")
        assert r.code == 0, r.err
        assert fake.live() == [] and "nothing was ever pulled" in r.err
    assert [e.kind for e in env.events(rid)].count("discard") == 1


@pytest.mark.slow
def test_cli_pull_help_does_not_import_torch() -> None:
    import subprocess

    code = ("import sys; from jitplan.cli import run; run(['pull', '--help']); "
            "print('torch' in sys.modules, 'vastai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


@pytest.mark.parametrize("text", [b"[1, 2]", b'"a string"', b"\xff\xfe{}"])
def test_a_tampered_pull_manifest_is_verified_again_not_a_traceback(text, tmp_path):
    """The pull manifest is a local file anyone can edit: JSON that is not an object means 'verify again'."""
    from jitplan.launch import pull as P

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "last.pt").write_bytes(b"x")
    (tmp_path / P.MANIFEST).write_bytes(text)
    (tmp_path / P.SNAPSHOT).parent.mkdir()
    (tmp_path / P.SNAPSHOT).write_bytes(b"x")
    assert P._verified_before(tmp_path, "0" * 64) is None
    P._drop_stale_snapshot(tmp_path, ("0" * 64, 1))  # the manifest says nothing: the snapshot is dropped
    assert not (tmp_path / P.SNAPSHOT).exists()
