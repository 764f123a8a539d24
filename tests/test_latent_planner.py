"""The encode plan of a latent model (issue 21, Build 3): the SD VAE encoder's FLOPs against torch's FLOP counter
on the real diffusers module, time and disk against values computed by hand, and the plan of dit-xl-2 showing
them (no torch, no diffusers on the plan's path)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jitplan.hardware.spec import hardware_from_flags
from jitplan.planner import latent as L
from jitplan.planner.family import load_family

ROOT = Path(__file__).resolve().parents[1]


def test_encoder_flops_by_hand():
    # 32 px: conv_in 2*1024*3*128*9; level 0 (32x32, 128): 4 convs 128->128 + stride-2 conv at 16x16; ...
    lvl0 = 4 * 2 * 1024 * 128 * 128 * 9 + 2 * 256 * 128 * 128 * 9
    lvl1 = 2 * 256 * (128 * 256 * 9 + 3 * 256 * 256 * 9 + 128 * 256) + 2 * 64 * 256 * 256 * 9
    lvl2 = 2 * 64 * (256 * 512 * 9 + 3 * 512 * 512 * 9 + 256 * 512) + 2 * 16 * 512 * 512 * 9
    lvl3 = 4 * 2 * 16 * 512 * 512 * 9
    mid = 4 * 2 * 16 * 512 * 512 * 9 + 4 * 2 * 16 * 512 * 512
    tail = 2 * 16 * 512 * 8 * 9 + 2 * 16 * 8 * 8
    want = 2 * 1024 * 3 * 128 * 9 + lvl0 + lvl1 + lvl2 + lvl3 + mid + tail
    assert L.encoder_flops_per_image(32, attention_products=False) == want == 4_227_729_408
    assert L.encoder_flops_per_image(32) == want + 2 * 2 * 16 * 16 * 512
    # FLOPs scale with the pixels but for the attention products (L^2)
    assert L.encoder_flops_per_image(256, attention_products=False) == 64 * want


def test_encoder_flops_match_the_counter_on_the_real_module():
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from torch.utils.flop_counter import FlopCounterMode

    from jitmodel import autoencoder as ae

    vae = ae.build_vae("random", warn=False)
    assert sum(p.numel() for p in vae.encoder.parameters()) == L.ENCODER_PARAMS
    for size in (32, 64):
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            vae.encode(torch.zeros(1, 3, size, size))
        # torch 2.13's counter has no CPU formula for scaled_dot_product_attention (docs/models.md)
        assert fc.get_total_flops() == L.encoder_flops_per_image(size, attention_products=False)


def test_on_the_fly_memory_matches_memtracker_on_the_real_module():
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from torch.distributed._tools.mem_tracker import MemTracker

    from jitmodel import autoencoder as ae

    vae = ae.build_vae("random", warn=False).requires_grad_(True)  # MemTracker hooks grads; encode runs no_grad
    for size, batch in ((32, 1), (64, 2)):
        x = torch.zeros(batch, 3, size, size)  # the input is the caller's, not the encoder's
        mt = MemTracker()
        mt.track_external(vae)
        with mt:
            ae.encode(vae, x)
        peak = mt.get_tracker_snapshot("peak")[torch.device("cpu")]
        acts = sum(v for k, v in peak.items() if "ACT" in str(k))
        assert acts == batch * size * size * L.ENCODER_ACT_BYTES_PER_PIXEL  # five 128-channel fp32 maps
    assert L.on_the_fly_bytes(32, 3) == 4 * L.ENCODER_PARAMS + 3 * 32 * 32 * 2560


def test_disk_and_time_by_hand():
    # ImageNet-1k at 256 px, fp16, one view: 1,281,167 x (4*32*32*2 + 8) bytes
    assert L.latent_disk_bytes(1_281_167, channels=4, size=32) == 1_281_167 * 8_200 == 10_505_569_400
    assert L.latent_disk_bytes(10, channels=4, size=32, views=2, dtype_bytes=4) == 10 * (2 * 4096 * 4 + 8)
    hw = hardware_from_flags("1xRTX4090")  # 165.2 bf16 TFLOPS, consumer (eta 0.58), host cores unknown
    p = L.plan_latents(hw, images=1_281_167, image_size=256, downsample=8, channels=4,
                       train_flops_per_image=715.9e9)
    flops = L.encoder_flops_per_image(256)
    rate = 165.2e12 * 0.5 * 0.58 / flops  # TF32 = half the bf16 rate
    assert p.gpu_images_per_s == pytest.approx(rate) and 175 < rate < 176.5
    assert p.encode_s == pytest.approx(1_281_167 / rate) and p.bound == "GPU"
    assert p.on_the_fly_step_fraction == pytest.approx(flops / 715.9e9) and 0.38 < p.on_the_fly_step_fraction < 0.39
    assert p.on_the_fly_bytes is None  # no micro-batch given
    p8 = L.plan_latents(hw, images=10, image_size=256, downsample=8, channels=4, train_flops_per_image=715.9e9,
                        micro_batch=8)
    assert p8.on_the_fly_bytes == 34_163_592 * 4 + 8 * 256 * 256 * 2560 == 1_478_831_648  # 1.48 GB per GPU
    assert "+1.48 GB per GPU at micro-batch 8" in p8.notes[-1]
    hw2 = hardware_from_flags("1xH100", cpus=2)  # 2 cores x 150 JPEG decodes/s = 300 images/s, under the GPU's
    p2 = L.plan_latents(hw2, images=300_000, image_size=256, downsample=8, channels=4)
    assert p2.gpu_images_per_s > 500 and p2.host_images_per_s == 300
    assert p2.bound == "host JPEG decoding" and p2.encode_s == pytest.approx(1000)
    p2v = L.plan_latents(hw2, images=300_000, image_size=256, downsample=8, channels=4, views=2)
    assert p2v.gpu_images_per_s == pytest.approx(p2.gpu_images_per_s / 2)  # --hflip: two encodes per image
    with pytest.raises(ValueError, match="only the SD VAE"):
        L.plan_latents(hw, images=10, image_size=256, downsample=16, channels=16)


def test_plan_for_a_recipe():
    hw = hardware_from_flags("1xRTX4090")
    lat, why = L.plan_for_recipe(load_family("dit-xl-2").space, hw, 715.9e9)
    assert why is None and lat.images == 1_281_167 and lat.latent_shape == (4, 32, 32)
    assert lat.disk_bytes == 10_505_569_400


def test_plan_dit_xl_2_shows_the_encode_without_torch(tmp_path):
    """The rows replace the old warning; the cached plan imports neither torch nor diffusers."""
    from rich.console import Console

    from jitplan.cli.plan_model_render import render_latents

    hw = hardware_from_flags("1xRTX4090")
    lat, _ = L.plan_for_recipe(load_family("dit-xl-2").space, hw, 715.9e9)
    console = Console(width=200, record=True)
    render_latents(console, lat)
    text = console.export_text()
    assert "2.0 h on one RTX 4090 (176 images/s, GPU-bound)" in text and "10.51 GB" in text
    assert "pre-encode once instead" in text
    code = ("import sys; from jitplan.planner.latent import plan_for_recipe; import jitplan.cli.plan_model_render;"
            "import jitplan.cli.data; print(sorted(m for m in ('torch', 'diffusers') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr
