"""A real OpenSSH server on 127.0.0.1 for tests: fresh host key, key-only login, an authorized_keys file the
test (or the Vast fake's "attach SSH key") fills. Needs /usr/sbin/sshd and root (CI installs openssh-server).

    with LoopbackSSHD(tmp_path) as sshd:        # sshd.port, sshd.authorized_keys, sshd.host_key_line()
        ...
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from jitplan.launch.ssh import SSHLaunch, SSHOptions
from jitplan.transport.target import SSHTarget

SSHD = "/usr/sbin/sshd"


def sshd_available() -> bool:
    return os.path.exists(SSHD) and shutil.which("rsync") is not None and shutil.which("ssh-keygen") is not None \
        and os.geteuid() == 0


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


class LoopbackSSHD:
    def __init__(self, folder: Path) -> None:
        self.dir = folder
        folder.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.authorized_keys = folder / "authorized_keys"
        self.authorized_keys.write_text("")
        keygen(folder / "hostkey")
        self.config = folder / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {folder}/hostkey\nPidFile {folder}/sshd.pid\n"
            f"AuthorizedKeysFile {self.authorized_keys}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nPermitRootLogin prohibit-password\nStrictModes no\nSubsystem sftp internal-sftp\n")
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> LoopbackSSHD:
        os.makedirs("/run/sshd", exist_ok=True)
        subprocess.run([SSHD, "-t", "-f", str(self.config)], check=True)
        self.proc = subprocess.Popen([SSHD, "-D", "-f", str(self.config), "-E", str(self.dir / "sshd.log")])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        self.__exit__()
        raise RuntimeError("sshd did not start")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class Remote:
    """A real sshd with a client key and a known_hosts file; the 'remote' disk is a folder here."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.key = keygen(tmp / "client key")
        self.sshd = LoopbackSSHD(tmp / "sshd").__enter__()
        self.sshd.authorized_keys.write_text(self.key.with_name("client key.pub").read_text())
        self.known_hosts = tmp / "known_hosts"
        host_pub = (tmp / "sshd" / "hostkey.pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.sshd.port} {' '.join(host_pub)}\n")
        self.root = tmp / "remote root"

    @property
    def target(self) -> SSHTarget:
        return SSHTarget(user="root", host="127.0.0.1", port=self.sshd.port, identity=str(self.key))

    def job(self, run_id: str = "run-a") -> SSHLaunch:
        job = SSHLaunch(self.target, SSHOptions(known_hosts=str(self.known_hosts)), root=str(self.root),
                        run_id=run_id)
        Path(job.run_dir, "out").mkdir(parents=True, exist_ok=True)
        return job
