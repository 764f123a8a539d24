"""The GPU catalog: every row sourced, the issue's cards present, names matched forgivingly."""

from __future__ import annotations

import pytest

from jitplan.errors import UsageError
from jitplan.hardware.catalog import catalog, closest_names, lookup, match_nvml_name

REQUIRED = [
    "RTX 3060 12GB", "RTX 3060 Ti", "RTX 3070", "RTX 3080 10GB", "RTX 3080 12GB", "RTX 3090", "RTX 4060 Ti 16GB",
    "RTX 4070", "RTX 4080", "RTX 4090", "RTX 5090", "RTX A4000", "RTX A5000", "RTX A6000", "RTX 6000 Ada", "L4",
    "A10", "L40S", "A100 40GB SXM", "A100 40GB PCIe", "A100 80GB SXM", "A100 80GB PCIe", "H100 SXM", "H100 PCIe",
    "H200",
]


def test_required_cards_present_and_sourced():
    rows = {g.name: g for g in catalog()}
    missing = [n for n in REQUIRED if n not in rows]
    assert not missing
    for g in rows.values():
        assert g.source.strip(), g.name
        assert (g.compute_capability or g.backend == "mps") and g.fp32_tflops and g.mem_bw_gbs, g.name
        assert g.gpu_class in ("consumer", "workstation", "datacenter", "apple")  # apple: tests/test_mps_plan.py


def test_names_are_unique():
    names = [g.name for g in catalog()]
    assert len(names) == len(set(names))


def test_geforce_bf16_is_fp32_accumulate_rate():
    # GeForce cards run FP32-accumulate tensor math at half the FP16-accumulate rate: about 2x the FP32 shader rate.
    for g in catalog():
        if g.gpu_class == "consumer" and g.bf16:  # Turing (no bf16): its FP16 tensor rate is 4x FP32
            assert 1.8 <= g.bf16_tflops / g.fp32_tflops <= 2.2, g.name


@pytest.mark.parametrize("name,expected", [
    ("RTX3060", "RTX 3060 12GB"), ("rtx-3060", "RTX 3060 12GB"), ("RTX 3060 12GB", "RTX 3060 12GB"),
    ("NVIDIA GeForce RTX 3060", "RTX 3060 12GB"), ("3090", "RTX 3090"), ("h100", "H100 SXM"),
    ("H100 SXM", "H100 SXM"), ("H100 PCIE", "H100 PCIe"), ("NVIDIA H100 80GB HBM3", "H100 SXM"),
    ("NVIDIA A100-SXM4-40GB", "A100 40GB SXM"), ("NVIDIA A100 80GB PCIe", "A100 80GB PCIe"),
    ("RTX 6000Ada", "RTX 6000 Ada"), ("NVIDIA RTX 6000 Ada Generation", "RTX 6000 Ada"), ("a6000", "RTX A6000"),
    ("l40s", "L40S"), ("H200", "H200"), ("RTX 4060 Ti", "RTX 4060 Ti 16GB"),
    ("A100-40GB", "A100 40GB SXM"), ("A100-80GB", "A100 80GB SXM"), ("A100 PCIE 80GB", "A100 80GB PCIe"),
    ("RTX 3080 12GB", "RTX 3080 12GB"), ("rtx3080 10gb", "RTX 3080 10GB"),
])
def test_lookup_forgiving(name, expected):
    assert lookup(name).name == expected


def test_memory_disambiguates_same_name():
    assert match_nvml_name("NVIDIA GeForce RTX 3080", memory_bytes=12288 * 2**20).name == "RTX 3080 12GB"
    assert match_nvml_name("NVIDIA GeForce RTX 3080", memory_bytes=10240 * 2**20).name == "RTX 3080 10GB"
    assert match_nvml_name("A100 PCIE", memory_bytes=80 * 2**30).name == "A100 80GB PCIe"


def test_unknown_gpu_names_closest():
    assert match_nvml_name("Voodoo 5 6000") is None
    with pytest.raises(UsageError, match="RTX 3060 12GB"):
        lookup("RTX 3061")
    assert "RTX 3060 12GB" in closest_names("rtx 306")


def test_a_slip_of_the_keys_finds_the_card_and_the_list():
    # "RTX3600" is "RTX3060" with two digits swapped: that card comes first, and the message says where
    # the whole catalog is (it used to offer RTX 3090, 3080 and 3070 only, and no --list-gpus)
    assert closest_names("RTX3600")[0] == "RTX 3060 12GB"
    assert closest_names("4090")[0] == "RTX 4090"
    with pytest.raises(UsageError, match=r"closest: RTX 3060 12GB.*jitplan plan --list-gpus.*--gpu-mem"):
        lookup("RTX3600")


def test_memory_is_nvml_total():
    assert lookup("RTX3060").memory_bytes == 12288 * 2**20
    assert lookup("H200").memory_bytes > 140 * 2**30
