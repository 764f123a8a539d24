"""jitplan probe on recorded NVML answers and planted cgroup trees (no GPU, no monkeypatching of os)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jitplan.hardware.host import HostPaths, read_host
from jitplan.hardware.nvml import query_nvml
from jitplan.hardware.nvml_fake import FakeNvml
from jitplan.hardware.probe import run_probe
from jitplan.hardware.schema import HardwareSpec
from jitplan.hardware.software import parse_version_py, torch_metadata

DATA = Path(__file__).parent / "data"
NVML = DATA / "nvml"
CG = DATA / "cgroup"
GIB = 2**30


def fake(name: str) -> FakeNvml:
    return FakeNvml.from_file(NVML / f"{name}.yaml")


# ---------------------------------------------------------------------------------------------- NVML seam

def test_nvml_2x_rtx3060_fields_and_p2p():
    r = query_nvml(fake("2x_rtx3060"))
    assert r.available and r.driver_version == "550.54.15" and r.driver_cuda == "12.4"
    g0, g1 = r.gpus
    assert (g0.name, g0.compute_capability, g0.memory_total_bytes) == ("NVIDIA GeForce RTX 3060", "8.6", 12 * GIB)
    assert (g1.pcie_gen_max, g1.pcie_width_max, g1.power_limit_w, g1.power_default_limit_w) == (3, 4, 150.0, 170.0)
    assert g0.mig_mode is None  # NotSupported on GeForce -> n/a, not a crash
    assert r.p2p == [["X", "GNS"], ["GNS", "X"]] and r.topology[0][1] == "SYS"


def test_nvml_8x_h100_matrix_and_processes():
    r = query_nvml(fake("8x_h100"))
    assert len(r.gpus) == 8 and {g.compute_capability for g in r.gpus} == {"9.0"}
    assert all(r.p2p[i][j] == ("X" if i == j else "OK") for i in range(8) for j in range(8))
    assert r.topology[0][1] == "NODE" and r.topology[0][7] == "SYS"
    assert r.gpus[3].processes[0].pid == 4242 and r.gpus[0].mig_mode == "disabled"


def test_nvml_unsupported_fields_become_none():
    r = query_nvml(fake("1x_rtx5090_old_driver"))
    g = r.gpus[0]
    assert g.compute_capability == "12.0" and g.pcie_gen is None and g.sm_clock_mhz is None
    assert r.p2p == []  # one GPU: no matrix


def test_nvml_no_driver_is_an_answer():
    r = query_nvml(fake("no_driver"))
    assert not r.available and r.error_kind == "NVMLError_LibraryNotFound" and "--gpus all" in r.error


def test_real_pynvml_on_this_machine_matches_the_driver_library():
    """The real nvidia-ml-py against what this machine has, checked independently of jitplan: no
    libnvidia-ml -> not available, LibraryNotFound and the one-line container hint; a driver -> every GPU."""
    import ctypes
    import importlib.util

    from jitplan.hardware.nvml import INIT_ERRORS

    r = query_nvml()
    if importlib.util.find_spec("pynvml") is None:
        assert (r.available, r.error_kind) == (False, "ImportError")
        return
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        assert (r.available, r.error_kind, r.gpus) == (False, "NVMLError_LibraryNotFound", [])
        assert r.error == INIT_ERRORS["NVMLError_LibraryNotFound"] and "\n" not in r.error
        return
    import pynvml

    pynvml.nvmlInit()
    try:
        count = pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()
    assert r.available and r.error is None and len(r.gpus) == count


# ---------------------------------------------------------------------------------------------- host

def test_cgroup_v2_limit_quota_oom_and_container():
    h = read_host(HostPaths.under(CG / "v2_24g"), affinity=16, host_ram_bytes=256 * GIB, env={})
    assert (h.cgroup_version, h.ram_limit_bytes, h.ram_bytes) == ("v2", 24 * GIB, 24 * GIB)
    assert (h.cpu_quota, h.cpus_usable, h.oom_kills, h.container) == (8.0, 8, 1, "docker")
    assert h.ram_host_bytes == 256 * GIB  # what psutil/free would say, kept but not used


def test_cgroup_v1_nested_takes_the_smallest_limit_on_the_path():
    h = read_host(HostPaths.under(CG / "v1_nested"), affinity=32, host_ram_bytes=128 * GIB, env={})
    assert (h.cgroup_version, h.ram_limit_bytes, h.ram_used_bytes) == ("v1", 24 * GIB, 2 * GIB)
    assert (h.cpu_quota, h.cpus_usable, h.oom_kills, h.container) == (4.0, 4, 2, "docker")


def test_cgroup_unlimited_and_affinity():
    h = read_host(HostPaths.under(CG / "v2_unlimited"), affinity=6, host_ram_bytes=64 * GIB,
                  env={"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert h.ram_limit_bytes is None and h.ram_bytes == 64 * GIB
    assert h.cpu_quota is None and h.cpus_usable == 6 and h.container == "kubernetes"


def test_limit_above_host_ram_does_not_bind():
    h = read_host(HostPaths.under(CG / "v2_24g"), affinity=4, host_ram_bytes=16 * GIB, env={})
    assert h.ram_limit_bytes is None and h.ram_bytes == 16 * GIB


def test_shm_path_is_injectable(tmp_path):
    missing = HostPaths(cgroup_root=tmp_path, proc_self_cgroup=tmp_path / "x", proc_1_cgroup=tmp_path / "y",
                        shm=tmp_path / "no-shm", root=tmp_path)
    h = read_host(missing, affinity=1, host_ram_bytes=GIB, env={})
    assert h.shm_total_bytes is None and h.cgroup_version is None
    (tmp_path / "shm").mkdir()
    h = read_host(HostPaths(cgroup_root=tmp_path, shm=tmp_path / "shm", root=tmp_path), env={})
    st = os.statvfs(tmp_path / "shm")
    assert h.shm_total_bytes == st.f_frsize * st.f_blocks


def test_env_knobs_only_whitelisted():
    h = read_host(HostPaths.under(CG / "v2_24g"), env={"NCCL_P2P_DISABLE": "1", "AWS_SECRET_ACCESS_KEY": "s3cr3t",
                                                        "CUDA_VISIBLE_DEVICES": "0,1"})
    assert h.env == {"CUDA_VISIBLE_DEVICES": "0,1", "NCCL_P2P_DISABLE": "1"}


# ---------------------------------------------------------------------------------------------- software

@pytest.mark.parametrize("text, expected", [
    ("__version__ = '2.5.1+cu124'\ndebug = False\ncuda: Optional[str] = '12.4'\n", ("2.5.1+cu124", "12.4")),
    ("__version__ = '2.13.0+cpu'\ncuda: Optional[str] = None\n", ("2.13.0+cpu", None)),
    ('__version__ = "1.13.1"\ncuda = "11.7"\n', ("1.13.1", "11.7")),
])
def test_parse_torch_version_py(text, expected):
    assert parse_version_py(text) == expected


@pytest.mark.slow
def test_torch_metadata_matches_the_installed_torch_without_importing_it():
    code = ("import sys; from jitplan.hardware.software import torch_metadata; m = torch_metadata(); "
            "print(m.version, m.cuda, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    meta = torch_metadata()
    assert out == [meta.version, str(meta.cuda), "False"]
    import torch  # the test process may import it: compare with the truth

    assert meta.version == torch.__version__ and meta.cuda == torch.version.cuda


# ---------------------------------------------------------------------------------------------- report + CLI

@pytest.mark.slow
def test_to_hardware_spec_is_what_plan_reads(tmp_path, cli):
    r = run_probe(nvml=fake("2x_rtx3060"), paths=HostPaths.under(CG / "v2_24g"),
                  host_kwargs={"affinity": 16, "host_ram_bytes": 256 * GIB, "env": {}})
    spec = r.to_hardware_spec()
    assert spec.gpus_per_node == 2 and spec.gpu.name == "RTX 3060 12GB" and spec.gpu.bf16_tflops > 1
    assert (spec.host.ram_bytes, spec.host.cpus) == (24 * GIB, 8)
    assert spec.software.driver_cuda == "12.4" and spec.source == "probe"
    out = tmp_path / "hardware.yaml"
    out.write_text(yaml.safe_dump(spec.model_dump(mode="json")))
    assert HardwareSpec.model_validate(yaml.safe_load(out.read_text())) == spec
    res = cli("plan", "--hardware", str(out), "--json")
    assert res.code == 0, res.err
    assert json.loads(res.out)["hardware"]["gpus_per_node"] == 2


def test_unknown_gpu_gets_a_placeholder_and_a_note():
    f = fake("2x_rtx3060")
    for g in f.gpus:
        g["name"] = "NVIDIA Frobnicator X9"
    r = run_probe(nvml=f, paths=HostPaths.under(CG / "v2_24g"))
    spec = r.to_hardware_spec()
    assert spec.gpu.bf16_tflops == 1.0 and "placeholder" in spec.gpu.source
    assert any("not in the GPU catalog" in n for n in r.notes)


def test_cli_probe_no_driver_exit_0_and_says_so(cli):
    r = cli("probe", "--replay-nvml", str(NVML / "no_driver.yaml"))
    assert r.code == 0 and "none visible" in r.out and "libnvidia-ml.so.1" in r.out


def test_cli_probe_json_and_out(cli, tmp_path):
    out = tmp_path / "hw" / "hardware.yaml"
    r = cli("probe", "--replay-nvml", str(NVML / "8x_h100.yaml"), "--host-root", str(CG / "v1_nested"),
            "--json", "--out", str(out))
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert len(data["nvml"]["gpus"]) == 8 and data["host"]["cgroup_version"] == "v1"
    spec = HardwareSpec.model_validate(yaml.safe_load(out.read_text()))
    assert spec.gpus_per_node == 8 and spec.gpu.compute_capability == "9.0"
    assert not list(out.parent.glob(".*.tmp"))  # atomic write left no temp file


def test_cli_probe_bad_input_exit_2(cli, tmp_path):
    r = cli("probe", "--replay-nvml", str(tmp_path / "missing.yaml"))
    assert r.code == 2 and r.err.startswith("Error: recorded NVML file not found")
    r = cli("probe", "--out", str(tmp_path))
    assert r.code == 2 and "is a directory" in r.err


@pytest.mark.slow
def test_probe_imports_neither_torch_nor_numpy():
    code = ("import sys, io, contextlib; from jitplan.cli import run\n"
            "with contextlib.redirect_stdout(io.StringIO()): rc = run(['probe', '--json'])\n"
            "print(rc, sorted(m for m in ('torch', 'numpy', 'vastai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "0 []"


def test_probe_deep_imports_torch_in_a_child(cli, tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "torch"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "import types\n__version__ = '2.5.1+cu124'\nversion = types.SimpleNamespace(cuda='12.4')\n"
        "_C = types.SimpleNamespace(_cuda_getArchFlags=lambda: 'sm_80 sm_86 sm_90')\n"
        "backends = types.SimpleNamespace(cudnn=types.SimpleNamespace(is_available=lambda: True,\n"
        "                                                            version=lambda: 90100))\n"
        "cuda = types.SimpleNamespace(is_available=lambda: True, device_count=lambda: 2,\n"
        "                             nccl=types.SimpleNamespace(version=lambda: (2, 21, 5)))\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))
    out = tmp_path / "hw.yaml"
    r = cli("probe", "--deep", "--json", "--replay-nvml", str(NVML / "2x_rtx3060.yaml"), "--out", str(out))
    assert r.code == 0, r.err
    imp = json.loads(r.out)["torch_import"]
    assert imp["ok"] and imp["arch_list"] == ["sm_80", "sm_86", "sm_90"] and imp["nccl"] == "2.21.5"
    sw = HardwareSpec.model_validate(yaml.safe_load(out.read_text())).software
    assert (sw.torch_version, sw.torch_cuda, sw.arch_list, sw.nccl) == ("2.5.1+cu124", "12.4",
                                                                       ["sm_80", "sm_86", "sm_90"], "2.21.5")


@pytest.mark.parametrize("modname", [
    "jitplan.hardware.nvml", "jitplan.hardware.host", "jitplan.hardware.software", "jitplan.hardware.probe",
    "jitplan.doctor.finding", "jitplan.doctor.context", "jitplan.doctor.checks_torch", "jitplan.doctor.runner",
    "jitplan.doctor.ckpt", "jitplan.dataset.inspect", "jitplan.dataset.prepare",
])
def test_docstring_examples_run(modname, monkeypatch):
    import doctest
    import importlib

    monkeypatch.chdir(Path(__file__).parent.parent)  # examples use tests/data/... paths
    res = doctest.testmod(importlib.import_module(modname), optionflags=doctest.ELLIPSIS)
    assert res.failed == 0 and res.attempted > 0


def test_env_knob_values_are_redacted():
    h = read_host(HostPaths.under(CG / "v2_24g"), env={"NCCL_SOCKET_IFNAME": "eth0",
                                                        "NCCL_DEBUG_FILE": "/tmp/nccl.log?token=abcdef123456"})
    assert h.env["NCCL_SOCKET_IFNAME"] == "eth0" and "abcdef123456" not in h.env["NCCL_DEBUG_FILE"]


def test_seam_uses_only_functions_the_real_binding_has():
    """query_nvml swallows AttributeError per field (old drivers), so a typo would hide silently: check names."""
    import re

    import pynvml

    src = (Path(__file__).parent.parent / "jitplan" / "hardware" / "nvml.py").read_text()
    used = set(re.findall(r"get\(\"(nvml[A-Z]\w+)\"", src)) | set(re.findall(r"nvml\.(nvml[A-Z]\w+)\(", src))
    assert len(used) > 20
    assert sorted(n for n in used if not hasattr(pynvml, n)) == []
    assert all(hasattr(FakeNvml, n) for n in used)  # the recorded answers cover every call


def test_old_driver_without_v2_entry_point_falls_back():
    f = fake("2x_rtx3060")
    f.data["cuda_driver_version_v2"] = False
    assert query_nvml(f).driver_cuda == "12.4"
