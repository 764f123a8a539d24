"""What a latent model's data costs before training: encoding the dataset once (time, disk) and why that
beats encoding on the fly. Pure: no torch, no diffusers.

The autoencoder is Stable Diffusion's VAE (sd-vae-ft-ema/mse, ``jitmodel.autoencoder``). Its encoder's FLOPs
are counted here layer by layer from the published configuration (a 3x3 conv is 2 x out pixels x C_in x C_out
x 9 FLOPs; the mid-block attention adds its projections and the L^2 attention products), and
``tests/test_latent_planner.py`` holds the count to torch's FLOP counter on the real diffusers module. At 256 px
it is 270.6 GFLOP per image (+2.1 GFLOP of attention products the CPU counter does not see): 38% of a DiT-XL/2
training step's 715.9, paid every epoch when encoding on the fly, once when pre-encoding. On the fly would
also hold the encoder on every GPU: 137 MB of fp32 weights + 2,560 B per input pixel of activations at its
peak (168 MB per 256 px image; ``on_the_fly_bytes``).

``jitplan data encode`` runs on one GPU in fp32, whose convolutions cuDNN runs on the TF32 tensor cores
(half the bf16 rate), at the efficiency the step-time model uses for the card's class (``ETA_TENSOR``); the
host decodes and crops the JPEGs at ``DECODE_IMG_PER_S`` per core. The slower of the two sets the time.

    >>> round(encoder_flops_per_image(256) / 1e9, 1)
    272.7
    >>> latent_disk_bytes(1_281_167, channels=4, size=32, views=1, dtype_bytes=2)  # ImageNet-1k, fp16
    10505569400
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from jitmodel.dataconfig import IMAGENET_TRAIN_IMAGES
from jitplan.hardware.schema import HardwareSpec
from jitplan.planner.timing import DECODE_IMG_PER_S, ETA_TENSOR

# The SD VAE encoder (diffusers Encoder of sd-vae-ft-ema's config.json)
BLOCKS = (128, 256, 512, 512)
LAYERS_PER_BLOCK = 2
LATENT_CHANNELS = 4
DOWNSAMPLE = 2 ** (len(BLOCKS) - 1)
ENCODER_PARAMS = 34_163_592  # counted on the module (tests check it)
# Peak activation bytes of one image through the encoder, no grad, fp32, per input pixel: five 128-channel maps
# at full resolution (MemTracker on the real diffusers module, 64 and 128 px, batch 1 and 2: exactly linear).
ENCODER_ACT_BYTES_PER_PIXEL = 5 * BLOCKS[0] * 4
LABEL_BYTES = 8  # int64 per image
TF32_OF_BF16 = 0.5  # dense TF32 tensor rate / dense bf16 rate on Ampere, Ada and Hopper


def _conv(pixels: int, cin: int, cout: int, k: int = 3) -> int:
    return 2 * pixels * cin * cout * k * k


def encoder_flops_per_image(image_size: int, *, attention_products: bool = True) -> int:
    """FLOPs of one image through the SD VAE encoder (+ quant_conv) at ``image_size`` px (a multiple of 8)."""
    hw = image_size * image_size
    f = _conv(hw, 3, BLOCKS[0])  # conv_in
    cin = BLOCKS[0]
    for i, cout in enumerate(BLOCKS):
        px = hw // 4 ** i
        for j in range(LAYERS_PER_BLOCK):  # ResNet blocks: two 3x3 convs, a 1x1 shortcut when channels change
            c0 = cin if j == 0 else cout
            f += _conv(px, c0, cout) + _conv(px, cout, cout) + (_conv(px, c0, cout, 1) if c0 != cout else 0)
        if i < len(BLOCKS) - 1:
            f += _conv(px // 4, cout, cout)  # the stride-2 downsampling conv
        cin = cout
    tokens, c = hw // DOWNSAMPLE ** 2, BLOCKS[-1]
    f += 2 * (_conv(tokens, c, c) * 2)  # the mid block's two ResNet blocks
    f += 4 * 2 * tokens * c * c  # attention: q, k, v, out projections
    if attention_products:
        f += 2 * 2 * tokens * tokens * c  # Q K^T and A V
    f += _conv(tokens, c, 2 * LATENT_CHANNELS) + _conv(tokens, 2 * LATENT_CHANNELS, 2 * LATENT_CHANNELS, 1)
    return f


def latent_disk_bytes(images: int, *, channels: int, size: int, views: int = 1, dtype_bytes: int = 2) -> int:
    """Bytes of a latents folder: every image's views x C x h x w values plus its int64 label."""
    return images * (views * channels * size * size * dtype_bytes + LABEL_BYTES)


class LatentPlan(BaseModel):
    """Pre-encoding a dataset for a latent model, and what encoding on the fly would cost instead."""

    model_config = ConfigDict(extra="forbid")
    images: int
    image_size: int
    latent_shape: tuple[int, int, int]
    views: int
    dtype: str
    encoder_gflop_per_image: float
    gpu: str
    gpu_images_per_s: float  # one GPU, TF32 at the card class's efficiency
    host_images_per_s: float | None  # JPEG decode + crop on the host's cores (None: cores unknown)
    encode_s: float
    bound: str  # "GPU" or "host JPEG decoding"
    disk_bytes: int
    disk_free_bytes: int | None
    on_the_fly_step_fraction: float | None  # encoder FLOPs / the model's training FLOPs per image
    on_the_fly_bytes: int | None  # GPU memory on-the-fly encoding would add at the plan's micro-batch
    notes: list[str]


def on_the_fly_bytes(image_size: int, micro_batch: int) -> int:
    """GPU memory encoding on the fly adds: the encoder's fp32 weights and a micro-batch's peak activations."""
    return ENCODER_PARAMS * 4 + micro_batch * image_size * image_size * ENCODER_ACT_BYTES_PER_PIXEL


def plan_latents(hw: HardwareSpec, *, images: int, image_size: int, downsample: int, channels: int,
                 train_flops_per_image: float | None = None, micro_batch: int | None = None, views: int = 1,
                 dtype: str = "float16") -> LatentPlan:
    """The time and disk of ``jitplan data encode`` for ``images`` at ``image_size`` on ``hw``'s GPU and host."""
    if downsample != DOWNSAMPLE or channels != LATENT_CHANNELS:
        raise ValueError(f"only the SD VAE (/{DOWNSAMPLE}, {LATENT_CHANNELS} channels) is modelled, not "
                         f"/{downsample} x {channels}")
    if hw.gpu is None:
        raise ValueError("encoding time is planned for a GPU; this hardware has none")
    flops = encoder_flops_per_image(image_size)
    eta = ETA_TENSOR.get(hw.gpu.gpu_class, ETA_TENSOR["custom"])
    gpu_rate = hw.gpu.bf16_tflops * 1e12 * TF32_OF_BF16 * eta / (flops * views)
    host_rate = DECODE_IMG_PER_S * hw.host.cpus if hw.host.cpus else None
    rate = min(gpu_rate, host_rate) if host_rate else gpu_rate
    size = image_size // downsample
    dbytes = {"float16": 2, "float32": 4}[dtype]
    disk = latent_disk_bytes(images, channels=channels, size=size, views=views, dtype_bytes=dbytes)
    notes = [f"encoder {flops / 1e9:.1f} GFLOP per image{' x 2 views (--hflip)' if views == 2 else ''} at "
             f"{hw.gpu.bf16_tflops:g} TFLOPS x {TF32_OF_BF16:g} (TF32) x {eta:.2f} (efficiency) on one GPU: "
             f"{gpu_rate:,.0f} images/s"]
    if host_rate:
        notes.append(f"host: {hw.host.cpus} cores x {DECODE_IMG_PER_S:g} JPEG decodes/s = {host_rate:,.0f} images/s "
                     "(--workers)")
    else:
        notes.append("host cores unknown: the time assumes the JPEG decoding keeps up (--workers N)")
    frac = flops / train_flops_per_image if train_flops_per_image else None
    otf = on_the_fly_bytes(image_size, micro_batch) if micro_batch else None
    if frac is not None and train_flops_per_image:
        mem = (f"+{otf / 1e9:.2f} GB per GPU at micro-batch {micro_batch}" if otf else "the encoder on every GPU")
        act = image_size ** 2 * ENCODER_ACT_BYTES_PER_PIXEL
        notes.append(f"on the fly instead: +{flops / 1e9:.0f} GFLOP per image every epoch ({frac:.0%} of the model's "
                     f"{train_flops_per_image / 1e9:.0f} GFLOP training step) and {mem} (the encoder's "
                     f"{ENCODER_PARAMS * 4 / 1e6:.0f} MB of fp32 weights + {act / 1e6:.0f} MB of activations per "
                     "image): pre-encode once instead (on-the-fly encoding is not built)")
    return LatentPlan(images=images, image_size=image_size, latent_shape=(channels, size, size), views=views,
                      dtype=dtype, encoder_gflop_per_image=flops / 1e9, gpu=hw.gpu.name, gpu_images_per_s=gpu_rate,
                      host_images_per_s=host_rate, encode_s=images / rate,
                      bound="GPU" if rate == gpu_rate else "host JPEG decoding", disk_bytes=disk,
                      disk_free_bytes=hw.host.disk_free_bytes, on_the_fly_step_fraction=frac,
                      on_the_fly_bytes=otf, notes=notes)


def plan_for_recipe(space: Any, hw: HardwareSpec, train_flops_per_image: float | None, micro_batch: int | None = None,
                    images: int = IMAGENET_TRAIN_IMAGES) -> tuple[LatentPlan | None, str | None]:
    """(the encode plan, None) for a family recipe's latent space (``jitplan.planner.family.Space``) on ``hw``,
    or (None, why it cannot be planned); (None, None) for a pixel space."""
    ae = space.autoencoder
    if ae is None:
        return None, None
    try:
        return plan_latents(hw, images=images, image_size=space.image_size, downsample=ae.downsample,
                            channels=ae.channels, train_flops_per_image=train_flops_per_image,
                            micro_batch=micro_batch), None
    except ValueError as e:
        return None, (f"latent model: the plan assumes images pre-encoded by {ae.name} (`jitplan data encode`); "
                      f"its time is not planned here: {e}")
