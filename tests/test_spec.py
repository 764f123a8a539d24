"""The spec grammar, human byte units and hardware files."""

from __future__ import annotations

import pytest
import yaml

from jitplan.errors import UsageError
from jitplan.hardware.spec import hardware_from_flags, load_hardware, parse_bytes, parse_gpu_spec


@pytest.mark.parametrize("text,nodes,per_node,name", [
    ("RTX3060", 1, 1, "RTX 3060 12GB"), ("2xRTX3060", 1, 2, "RTX 3060 12GB"), ("8xH200", 1, 8, "H200"),
    ("2x8xH100", 2, 8, "H100 SXM"), ("2 x rtx-3060", 1, 2, "RTX 3060 12GB"),
    ("4X RTX 3060 12GB", 1, 4, "RTX 3060 12GB"),
    ("1xRTX4090", 1, 1, "RTX 4090"), ("3*A100-80GB", 1, 3, "A100 80GB SXM"),
])
def test_gpu_spec_grammar(text, nodes, per_node, name):
    n, g, spec = parse_gpu_spec(text)
    assert (n, g, spec.name) == (nodes, per_node, name)


@pytest.mark.parametrize("text", ["0xRTX3060", "2x0xH100", "-2xRTX3060", "", "2x", "2xRTX9999"])
def test_bad_gpu_spec(text):
    with pytest.raises(UsageError):
        parse_gpu_spec(text)


@pytest.mark.parametrize("text,value", [
    ("24GB", 24 * 10**9), ("24GiB", 24 * 2**30), ("24 gb", 24 * 10**9), ("1.5T", 1_500_000_000_000),
    ("512MiB", 512 * 2**20), ("1048576", 1048576), ("64m", 64 * 10**6), (1024, 1024),
])
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["-5GB", "0GB", "lots", "24 parsecs", "GB"])
def test_parse_bytes_rejects(text):
    with pytest.raises(UsageError, match="--host-ram"):
        parse_bytes(text, "--host-ram")


def test_flags_override_and_custom_gpu():
    hw = hardware_from_flags("2xRTX3060", host_ram="24GB", cpus=8, shm="8GiB", disk="1TB")
    assert hw.world_size == 2 and hw.host.cpus == 8 and hw.host.shm_bytes == 8 * 2**30
    assert hw.source == "catalog"
    over = hardware_from_flags("RTX3060", gpu_mem="16GB")
    assert over.gpu.memory_bytes == 16 * 10**9 and over.source == "flags"
    custom = hardware_from_flags("2xMYCARD", gpu_mem="20GB", gpu_tflops=80, gpu_bw=700)
    assert (custom.gpus_per_node, custom.gpu.name, custom.gpu.gpu_class) == (2, "MYCARD", "custom")
    with pytest.raises(UsageError, match="gpu-mem"):
        hardware_from_flags("2xMYCARD")


def test_hardware_file_round_trip(tmp_path):
    hw = hardware_from_flags("2xRTX3060", host_ram="24GB")
    p = tmp_path / "hw.yaml"
    p.write_text(yaml.safe_dump(hw.model_dump(mode="json")))
    back = load_hardware(p)
    assert back.gpu == hw.gpu and back.host == hw.host and back.source == "file"


@pytest.mark.parametrize("content,match", [
    ("gpus: [", "not valid YAML"), ("- 1\n- 2\n", "mapping"), ("schema_version: 7\n", "schema_version 7"),
    ("schema_version: 1\nnodes: 0\n", "nodes"), ("schema_version: 1\nbogus: 1\n", "bogus"),
])
def test_bad_hardware_file(tmp_path, content, match):
    p = tmp_path / "hw.yaml"
    p.write_text(content)
    with pytest.raises(UsageError, match=match):
        load_hardware(p)
    with pytest.raises(UsageError, match="not found"):
        load_hardware(tmp_path / "missing.yaml")


def test_a_plan_file_serves_as_hardware_file(cli, tmp_path):
    """`--hardware plan.yaml` re-plans for the plan's hardware (a plan has its own schema_version key)."""
    import json

    out = tmp_path / "plan.yaml"
    first = cli("plan", "--gpus", "2xRTX3060", "--host-ram", "24GB", "--out", str(out), "--json")
    assert first.code == 0, first.err
    again = cli("plan", "--hardware", str(out), "--json")
    assert again.code == 0, again.err
    a, b = json.loads(first.out), json.loads(again.out)
    assert b["hardware"]["gpu"] == a["hardware"]["gpu"] and b["hardware"]["host"] == a["hardware"]["host"]
    assert b["train"]["batch_per_gpu"] == a["train"]["batch_per_gpu"]
