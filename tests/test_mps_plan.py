"""Apple silicon (MPS) rows, sampling/evaluation plans (jitplan.planner.inference*), and the sampler's device.

Numbers are recomputed here from the variant table and the documented constants, not copied from the output.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from jitmodel.counts import forward_flops_per_image, param_breakdown
from jitmodel.variants import get_variant
from jitplan.hardware.catalog import catalog, lookup
from jitplan.hardware.spec import hardware_from_flags, parse_gpu_spec
from jitplan.planner import inference as inf
from jitplan.planner import timing
from jitplan.planner.inference_plan import InferenceOptions, InferencePlan, make_inference_plan
from jitplan.schemas import load_recipe

GiB = 2**30
APPLE = ["M1", "M1 Pro", "M1 Max", "M2", "M2 Pro", "M2 Max", "M3", "M3 Pro", "M3 Max", "M4", "M4 Pro", "M4 Max"]
HEUN_CFG = inf.SamplerSettings(method="heun", steps=50, cfg=2.9, interval_min=0.1, interval_max=1.0, mode="fast")


# ---- catalog --------------------------------------------------------------------------------------------------
def test_apple_rows_present_sourced_and_mps():
    rows = {g.name: g for g in catalog()}
    for chip in APPLE:
        g = rows[f"Apple {chip}"]
        assert g.backend == "mps" and g.gpu_class == "apple" and g.source.strip()
        assert g.gpu_cores and g.fp32_tflops and g.mem_bw_gbs and not g.nvlink
        assert g.bf16_tflops == g.fp32_tflops  # no tensor cores: half precision at the FP32 ALU rate
        assert lookup(chip).name == g.name and lookup(chip.replace(" ", "")).name == g.name
    assert all(g.backend == "cuda" for g in catalog() if not g.name.startswith("Apple "))


def test_unified_memory_from_the_name_or_gpu_mem():
    assert parse_gpu_spec("1xM4-24GB")[2].memory_bytes == 24 * GiB  # Apple's GB are GiB
    assert parse_gpu_spec("M4 Pro 48GB")[2].memory_bytes == 48 * GiB
    assert parse_gpu_spec("M4")[2].memory_bytes == 16 * GiB  # the chip's smallest configuration
    assert hardware_from_flags("1xM4", gpu_mem="32GiB").gpu.memory_bytes == 32 * GiB
    assert parse_gpu_spec("RTX 3060 12GB")[2].memory_bytes == 12288 * 2**20  # CUDA names unchanged


def test_usable_memory_is_metals_working_set():
    m4 = lookup("M4")
    assert inf.usable_memory(m4) == int(16 * GiB * 2 / 3)
    assert inf.usable_memory(m4.model_copy(update={"memory_bytes": 64 * GiB})) == 48 * GiB
    assert inf.usable_memory(lookup("RTX 3060")) == lookup("RTX 3060").memory_bytes


# ---- the sampler's counts --------------------------------------------------------------------------------------
@pytest.mark.parametrize("method,steps,cfg,lo,hi,mode", [
    ("heun", 50, 2.9, 0.1, 1.0, "fast"), ("heun", 50, 2.9, 0.1, 1.0, "exact"), ("heun", 50, 1.0, 0.0, 1.0, "fast"),
    ("euler", 50, 3.0, 0.0, 0.7, "fast"), ("heun", 7, 2.0, 0.3, 0.9, "fast"), ("heun", 1, 2.0, 0.0, 1.0, "fast"),
    ("euler", 33, 1.5, 0.2, 0.6, "fast"), ("heun", 100, 4.0, 0.25, 0.75, "fast"),
])
@pytest.mark.slow
def test_forwards_per_image_matches_jitmodel(method, steps, cfg, lo, hi, mode):
    pytest.importorskip("torch")
    from jitmodel.config import SampleConfig
    from jitmodel.sample import forwards_per_image

    s = inf.SamplerSettings(method=method, steps=steps, cfg=cfg, interval_min=lo, interval_max=hi, mode=mode)
    ref = SampleConfig(method=method, steps=steps, cfg=cfg, interval_min=lo, interval_max=hi, mode=mode)
    assert inf.forwards_per_image(s) == forwards_per_image(ref)
    assert inf.nfe_of(s) == (2 * steps - 1 if method == "heun" else steps)


# ---- memory ---------------------------------------------------------------------------------------------------
def test_memory_of_a_known_case_recomputed():
    """JiT-B/16 at 256 px, bf16 autocast, batch 4 with batched CFG: 8 images per forward."""
    v = get_variant("JiT-B/16")
    pb = param_breakdown(v, 256)
    s_max = 16 * 16 + v.in_context_len  # 256 image tokens + the in-context tokens
    per_forward = 32.6 * v.hidden * s_max + 5.8 * v.heads * s_max**2
    act = 8 * per_forward + 4 * 5 * 4 * 3 * 256 * 256
    tensors = 4 * pb.total + 2 * pb.matmul + act
    m4 = inf.predict_memory("JiT-B/16", 256, lookup("M4"), HEUN_CFG, 4, dtype="bf16")
    assert m4.total == pytest.approx(tensors * 1.05, rel=1e-6)  # MPS: no CUDA context
    cuda = inf.predict_memory("JiT-B/16", 256, lookup("RTX 3060"), HEUN_CFG, 4, dtype="bf16")
    assert cuda.total - m4.total == pytest.approx(0.38e9, rel=1e-3)
    fp32 = inf.predict_memory("JiT-B/16", 256, lookup("M4"), HEUN_CFG, 4, dtype="fp32")
    assert "autocast weight cache" not in {i.name for i in fp32.items}
    no_cfg = inf.SamplerSettings(steps=50, cfg=1.0)
    assert inf.forward_batch(no_cfg, 4) == 4 and inf.forward_batch(HEUN_CFG, 4) == 8


@pytest.mark.parametrize("name,mem", [("M4", None), ("M4", "32GiB"), ("M1", None), ("RTX 3060", None),
                                      ("M4 Max", None)])
def test_max_batch_is_the_last_that_fits(name, mem):
    gpu = hardware_from_flags(f"1x{name}", gpu_mem=mem).gpu
    b = inf.max_batch("JiT-B/16", 256, gpu, HEUN_CFG, dtype="bf16")
    target = 0.9 * inf.usable_memory(gpu)
    assert inf.predict_memory("JiT-B/16", 256, gpu, HEUN_CFG, b, dtype="bf16").total <= target
    assert inf.predict_memory("JiT-B/16", 256, gpu, HEUN_CFG, b + 1, dtype="bf16").total > target


def test_more_unified_memory_fits_a_larger_batch():
    small = inf.max_batch("JiT-L/16", 256, lookup("M4"), HEUN_CFG)
    big = inf.max_batch("JiT-L/16", 256, hardware_from_flags("1xM4-32GB").gpu, HEUN_CFG)
    assert big > small > 0


# ---- time -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gpu", ["RTX 3060", "H200", "RTX 4090"])
def test_cuda_forward_is_the_training_planners_forward(gpu):
    terms = inf.forward_terms("JiT-B/16", lookup(gpu), 256)
    assert sum(t.seconds for t in terms) == pytest.approx(timing.forward_time_per_image("JiT-B/16", lookup(gpu)))


def test_mps_forward_at_the_fp32_alu_rate():
    m4, v = lookup("M4"), get_variant("JiT-B/16")
    lens = [256] * v.in_context_start + [288] * (v.depth - v.in_context_start)
    qk = sum(2.0 * s * s * v.hidden for s in lens)
    mm = forward_flops_per_image(v, 256) - qk
    terms = {t.name: t.seconds for t in inf.forward_terms(v, m4, 256)}
    rate = m4.fp32_tflops * 1e12 * inf.ETA_MPS
    assert terms["matmuls"] == pytest.approx(mm / rate) and terms["fp32 attention"] == pytest.approx(qk / rate)


def test_plan_time_for_n_images():
    rec = load_recipe("JiT-B/16")
    p = make_inference_plan(hardware_from_flags("1xM4"), rec, InferenceOptions(task="evaluate", num_images=50_000))
    fwd = sum(t.seconds for t in inf.forward_terms("JiT-B/16", lookup("M4"), 256))
    mp = 256 * 256 / 1e6
    per = (187 * fwd + inf.PNG_WRITE_S_PER_MP * mp + inf.inception_s_per_image(lookup("M4"))
           + inf.PNG_READ_S_PER_MP * mp)
    t = p.target
    assert (t.nfe, t.forwards_per_image) == (99, 187)
    assert t.seconds_per_image == pytest.approx(per) and t.total_s == pytest.approx(50_000 * per)
    assert t.batch == min(t.max_batch, inf.GEN_BATCH_CAP) and t.memory_bytes <= t.memory_target_bytes
    # the reference (the recipe's 8 x H200) shares the images over its 8 GPUs
    ref = p.reference
    assert ref.world_size == 8 and ref.total_s == pytest.approx(6250 * ref.seconds_per_image)
    assert "--device" in p.command and p.command[p.command.index("--device") + 1] == "mps"
    assert t.cost_usd is None
    rented = make_inference_plan(hardware_from_flags("1xH100"), rec, InferenceOptions(task="evaluate",
                                                                                      price_per_hour=2.5))
    assert rented.target.cost_usd == pytest.approx(2.5 * rented.target.total_s / 3600)
    assert rented.command[rented.command.index("--device") + 1] == "cuda"


def test_fp32_when_the_autocast_cache_does_not_fit():
    """H/16 on an 8 GB M1: weights + the 2 B/param half cache exceed the working set; fp32 alone fits."""
    rec, gpu = load_recipe("JiT-H/16"), lookup("M1")
    s = inf.SamplerSettings(steps=50, cfg=2.2, interval_min=0.1)
    assert inf.max_batch("JiT-H/16", 256, gpu, s, dtype="bf16") == 0
    p = make_inference_plan(hardware_from_flags("1xM1"), rec, InferenceOptions())
    assert p.target.dtype == "fp32" and p.target.batch == min(p.target.max_batch, 64) > 0
    assert p.command[p.command.index("--precision") + 1] == "fp32"
    assert "--precision" not in make_inference_plan(hardware_from_flags("1xM4"), rec, InferenceOptions()).command


def test_sampling_maps_the_checkpoint(monkeypatch):
    pytest.importorskip("torch")
    from jitmodel import sample

    seen = {}

    def fake_load(path, map_location="cpu", mmap=False):
        seen["mmap"] = mmap
        raise ValueError("stop here")

    monkeypatch.setattr(sample, "load_checkpoint", fake_load)  # what load_for_sampling calls
    with pytest.raises(ValueError, match="stop here"):
        sample.load_for_sampling("x.pt")
    assert seen["mmap"] is True  # an H/16 file (~19 GB) is not read into a Mac's unified memory


def test_infeasible_and_multi_mac():
    from jitplan.errors import CheckFailed, UsageError

    rec = load_recipe("JiT-H/16")
    with pytest.raises(CheckFailed, match="does not fit"):
        make_inference_plan(hardware_from_flags("1xM1", gpu_mem="1GiB"), rec, InferenceOptions())
    with pytest.raises(UsageError, match="one GPU"):
        make_inference_plan(hardware_from_flags("2xM4"), rec, InferenceOptions())


# ---- CLI ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["sample", "evaluate"])
def test_cli_plans_sampling_on_a_mac(cli, task):
    r = cli("plan", "--gpus", "1xM4-24GB", "--task", task, "--wide")
    assert r.code == 0, r.err
    for text in ("quantity", "reference", "target", "8 x H200", "1 x Apple M4", "recommendedMaxWorkingSetSize",
                 "--device mps", "jitmodel"):
        assert text in r.out, text


def test_cli_json_shape_and_out(cli, tmp_path):
    out = tmp_path / "sample.yaml"
    r = cli("plan", "--gpus", "1xM4", "--task", "sample", "--num-images", "1000", "--steps", "25", "--json",
            "--out", str(out))
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["kind"] == "inference-plan" and data["task"] == "sample" and data["num_images"] == 1000
    assert {"reference", "target", "rows", "command", "sample", "hardware"} <= set(data)
    assert data["sample"]["steps"] == 25 and data["target"]["nfe"] == 49
    assert data["command"][:2] == ["jitmodel", "evaluate"]  # 1000 images: batched, resumable
    assert InferencePlan.model_validate(yaml.safe_load(out.read_text())).model_dump(mode="json") == data
    shown = cli("plan", "--show", str(out), "--json")  # a saved sampling plan renders like a training plan
    assert shown.code == 0 and json.loads(shown.out) == data
    assert "jitmodel evaluate" in cli("plan", "--show", str(out)).out


def test_cli_refuses_training_on_mps_and_bad_task(cli):
    r = cli("plan", "--gpus", "1xM4")
    assert r.code == 1 and "no training plan" in r.err and "--task sample" in r.err
    assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 2  # Error: ... + hint
    r = cli("plan", "--gpus", "1xM4", "--task", "bogus")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "--task" in r.err
    r = cli("plan", "--gpus", "2xM4", "--task", "sample")
    assert r.code == 2 and "one GPU" in r.err
    assert cli("plan", "--gpus", "1xRTX3060", "--task", "sample").code == 0  # CUDA cards plan sampling too
    r = cli("plan", "--gpus", "1xM4", "--task", "sample", "--trace")  # a training flag is not silently ignored
    assert r.code == 2 and "--trace" in r.err and len(r.err.strip().splitlines()) == 1


@pytest.mark.slow
def test_sample_plan_does_not_import_torch():
    code = ("import sys; from jitplan.cli import run; rc = run(['plan', '--gpus', '1xM4', '--task', 'evaluate', "
            "'--json']); print(rc, [m for m in ('torch', 'numpy', 'vastai') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "0 []"


# ---- jitmodel's sampler on MPS (no Apple GPU here: torch.backends.mps.is_available is patched) ------------------
def test_auto_device_picks_mps_and_its_autocast(monkeypatch):
    torch = pytest.importorskip("torch")
    from jitmodel import dist

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    dev = dist.pick_device("auto")
    assert dev.type == "mps" and dist.pick_device("mps").type == "mps"
    monkeypatch.setattr(dist, "mps_bf16_supported", lambda: True)  # macOS 14+
    assert dist.sampling_autocast("auto", dev) is torch.bfloat16
    assert dist.sampling_autocast("fp16", dev) is torch.float16 and dist.sampling_autocast("fp32", dev) is None
    monkeypatch.setattr(dist, "mps_bf16_supported", lambda: False)  # macOS 13
    assert dist.sampling_autocast("auto", dev) is torch.float16
    with pytest.raises(ValueError, match="macOS 14"):
        dist.sampling_autocast("bf16", dev)
    with pytest.raises(ValueError, match="--precision"):
        dist.sampling_autocast("int8", dev)


def test_no_mps_here_is_a_clean_error(monkeypatch):
    torch = pytest.importorskip("torch")
    from jitmodel import dist

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dist.pick_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="no Apple GPU"):
        dist.pick_device("mps")
    assert dist.mps_bf16_supported() is False  # a CPU build has no MPS device at all
    assert dist.sampling_autocast("auto", torch.device("cpu")) is None


def test_jitmodel_sample_cli_device_errors(capsys):
    pytest.importorskip("torch")
    from jitmodel.cli import run

    assert run(["sample", "--ckpt", "x.pt", "--random", "--device", "tpu"]) == 2
    assert "--device must be" in capsys.readouterr().err
    assert run(["sample", "--ckpt", "x.pt", "--random", "--precision", "int8", "--device", "cpu"]) == 2
    assert "--precision must be" in capsys.readouterr().err
