"""The ``jitmodel`` command: train, sample, trajectory, evaluate, fid-stats.

Every command builds the model from the checkpoint's own description. Errors are one line on stderr
(``Error: ...``) with exit code 2 for bad input; ``JITMODEL_DEBUG=1`` shows tracebacks.

    jitmodel train --config train.yaml
    jitmodel sample --ckpt runs/jit/last.pt --classes 207,360 --n 4 --cfg 2.9 --interval 0.1,1.0 --out grid.png
    jitmodel sample --ckpt last.pt --random --n 16 --img-size 48 --out-dir singles/ --out grid.png
    jitmodel trajectory --ckpt last.pt --classes 1,3,7 --steps 10 --out strip.png --html page.html
    torchrun --nproc-per-node 8 -m jitmodel evaluate --ckpt last.pt --out-dir eval --ref-stats jit_in256_stats.npz
    jitmodel fid-stats /data/imagenet-val-256 --out stats.npz
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import typer

from jitmodel import dist, early_signals
from jitmodel import trajectory as tr
from jitmodel.atomic import atomic_write_text, os_error_line
from jitmodel.config import validation_summary
from jitmodel.helpfmt import plain_help
from jitmodel.progress import Progress

app = typer.Typer(name="jitmodel", help="Train, sample and evaluate JiT models.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_show_locals=False)

CKPT = typer.Option(..., "--ckpt", help="Checkpoint (.pt from jitmodel, or an official checkpoint-*.pth).")
DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda | mps")
EMA = typer.Option("ema1", "--ema", help="Weights: ema1 (official default, 0.9999) | ema2 | raw")
SAMPLER = typer.Option(None, "--sampler", help="heun (default) | euler")
STEPS = typer.Option(None, "--steps", help="Sampling steps (default 50; trajectory: 10).")
CFG = typer.Option(None, "--cfg", help="Guidance weight (1 = none).")
INTERVAL = typer.Option(None, "--interval", help="Guidance interval lo,hi in t (README recipes: 0.1,1.0).")
MODE = typer.Option(None, "--mode", help="fast (batched, skips unguided uncond forwards) | exact (official calls)")
IMG_SIZE = typer.Option(None, "--img-size", help="Serve at another resolution (rebuilds pos_embed and RoPE).")
PRECISION = typer.Option("auto", "--precision", help="auto (autocast: bf16 on CUDA cards with bf16, else fp16; "
                         "on Apple "
                         "MPS bf16 on macOS 14+, else fp16; fp32 on the CPU) | bf16 | fp16 | fp32")
JSON = typer.Option(False, "--json", help="Print the result as JSON on stdout.")


def _sample_cfg(defaults: Any, sampler: str | None, steps: int | None, cfg: float | None,
                interval: str | None, mode: str | None) -> Any:
    upd: dict[str, Any] = {k: v for k, v in {"method": sampler, "steps": steps, "cfg": cfg, "mode": mode}.items()
                           if v is not None}
    if interval is not None:
        try:
            lo, hi = (float(x) for x in interval.split(","))
        except ValueError:
            raise ValueError(f"--interval takes lo,hi (e.g. 0.1,1.0), got {interval!r}") from None
        upd |= {"interval_min": lo, "interval_max": hi}
    return type(defaults).model_validate({**defaults.model_dump(), **upd})


def _setup(ckpt: str, ema: str, img_size: int | None, device: str, precision: str, variant: str | None = None):
    from jitmodel.dist import DistEnv, pick_device, sampling_autocast  # lazy: start-up (numpy, pynvml, torch)
    from jitmodel.sample import load_for_sampling  # lazy: start-up (numpy, pynvml, torch)

    if device not in ("auto", "cpu", "cuda", "mps"):
        raise ValueError(f"--device must be auto, cpu, cuda or mps, got {device!r}")
    env = DistEnv.from_env()
    dev = pick_device(device, env.local_rank)  # auto: cuda > mps > cpu
    autocast = sampling_autocast(precision, dev)
    return env, dev, autocast, load_for_sampling(ckpt, ema=ema, img_size=img_size, variant=variant, device=dev)


def _emit(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(data))
    else:
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in data.items()))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
def train(ctx: typer.Context) -> None:
    """Train: the arguments go to python -m jitmodel.train (jitmodel train --help lists them)."""

    early_signals.install()  # before torch is imported: a SIGTERM while starting ends cleanly
    from jitmodel.train import main as train_main  # lazy: start-up (PIL, numpy, pynvml, torch)

    rv = train_main(list(ctx.args))
    raise typer.Exit(rv if isinstance(rv, int) else 0)


@app.command()
def sample(ckpt: str = CKPT,
           classes: str = typer.Option(None, "--classes", help="Comma-separated class indices, e.g. 207,360."),
           random: bool = typer.Option(False, "--random", help="Random classes instead of --classes."),
           n: int = typer.Option(None, "--n", help="Images per class with --classes (4), in all with --random (8)."),
           cfg: float = CFG, interval: str = INTERVAL, steps: int = STEPS, sampler: str = SAMPLER, mode: str = MODE,
           ema: str = EMA, seed: int = typer.Option(0, "--seed"), device: str = DEVICE, img_size: int = IMG_SIZE,
           variant: str = typer.Option(None, "--variant", help="Refuse unless the checkpoint is this variant."),
           precision: str = PRECISION, out: Path = typer.Option(Path("samples.png"), "--out", help="Grid PNG."),
           out_dir: Path = typer.Option(None, "--out-dir", help="Also write each image as NNNNN.png here."),
           as_json: bool = JSON) -> None:
    """Sample a grid of images from a checkpoint."""
    import torch

    from jitmodel.sample import (  # lazy: start-up (numpy, pynvml, torch)
        make_grid,
        noise_for_ids,
        parse_classes,
        save_png,
        short_run_note,
        to_uint8,
    )
    from jitmodel.sample import sample as run_sampler  # lazy: start-up (numpy, pynvml, torch)

    if (classes is None) == (not random):
        raise ValueError("give either --classes 207,360 or --random")
    if n is not None and n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    env, dev, autocast, m = _setup(ckpt, ema, img_size, device, precision, variant)
    scfg = _sample_cfg(m.sample_defaults, sampler, steps, cfg, interval, mode)
    nc = m.model_cfg.num_classes
    if random:
        labels = torch.randint(0, nc, (n or 8,), generator=torch.Generator().manual_seed(seed)).tolist()
    else:
        labels = [c for c in parse_classes(classes, nc) for _ in range(n or 4)]
    shape = (m.model_cfg.in_channels, m.model_cfg.img_size, m.model_cfg.img_size)
    z = noise_for_ids(list(range(len(labels))), seed, shape, m.diffusion.noise_scale, dev)
    t0 = time.perf_counter()
    with torch.no_grad(), Progress(f"sample {len(labels)} images", scfg.steps, "steps") as bar:
        img, stats = run_sampler(m.x_hat, z, torch.tensor(labels, device=dev), scfg, num_classes=nc,
                                 t_eps=m.diffusion.t_eps, autocast=autocast, on_step=lambda *_: bar.advance())
    secs = time.perf_counter() - t0
    if (short := short_run_note(m.trained_steps)) is not None:
        print(short, file=sys.stderr)
    pics = to_uint8(m.to_pixels(img))  # a latent model: decoded by its autoencoder
    save_png(out, make_grid(pics, ncol=None if random else (n or 4)))
    if out_dir is not None:
        for k, p in enumerate(pics):
            save_png(out_dir / f"{k:05d}.png", p.permute(1, 2, 0))
    _emit({"images": len(labels), "grid": str(out), "img_size": m.model_cfg.img_size, "sampler": scfg.method,
           "steps": scfg.steps, "mode": scfg.mode, "forwards_per_image": stats.forwards, "seconds": secs,
           "images_per_s": len(labels) / secs}, as_json)


@app.command()
def trajectory(ckpt: str = CKPT, cls: int = typer.Option(None, "--class", help="One class index."),
               classes: str = typer.Option(None, "--classes", help="Several classes for the page's picker."),
               steps: int = typer.Option(10, "--steps"), cfg: float = CFG, interval: str = INTERVAL,
               sampler: str = SAMPLER, ema: str = EMA, seed: int = typer.Option(0, "--seed"), device: str = DEVICE,
               img_size: int = IMG_SIZE, out: Path = typer.Option(Path("trajectory.png"), "--out", help="PNG strip."),
               html: Path = typer.Option(None, "--html", help="Self-contained HTML viewer."),
               as_json: bool = JSON) -> None:
    """Frames of the denoising (z_t, z_t with the patch grid, x̂) as a PNG strip and an HTML page."""
    from jitmodel.sample import parse_classes, save_png  # lazy: start-up (numpy, pynvml, torch)

    env, dev, _, m = _setup(ckpt, ema, img_size, device, "fp32")
    nc = m.model_cfg.num_classes
    wanted = ",".join(x for x in (str(cls) if cls is not None else None, classes) if x) or "0"
    labels = list(dict.fromkeys(parse_classes(wanted, nc)))
    scfg = _sample_cfg(m.sample_defaults, sampler, steps, cfg, interval, "exact")
    size, patch = m.model_cfg.img_size, m.model_cfg.spec.patch
    with Progress(f"trajectory of {len(labels)} class(es)", scfg.steps * len(labels), "steps") as bar:
        frames = [tr.compute_frames(m.x_hat, label=c, num_classes=nc, img_size=size, steps=scfg.steps,
                                    sample_cfg=scfg, in_channels=m.model_cfg.in_channels, seed=seed,
                                    noise_scale=m.diffusion.noise_scale, t_eps=m.diffusion.t_eps, device=dev,
                                    on_step=bar.advance) for c in labels]
    scale = tr.display_scale(size)
    rendered = [[tr.render(f, patch, scale) for f in fr] for fr in frames]
    save_png(out, tr.strip(rendered))
    names = [f"{c}: {m.classes[c]}" if m.classes[c] != str(c) else str(c) for c in labels]
    if html is not None:
        title = f"{m.trained_cfg.variant} at {size}px — {scfg.method} {scfg.steps} steps, cfg {scfg.cfg}"
        atomic_write_text(html, tr.page(rendered, frames, names, title))
    _emit({"classes": labels, "frames": scfg.steps + 1, "strip": str(out), "html": str(html) if html else None},
          as_json)


@app.command()
def evaluate(ckpt: str = CKPT, out_dir: Path = typer.Option(..., "--out-dir", help="Folder of NNNNN.png (resumed)."),
             n: int = typer.Option(None, "--num-images", help="Images in all (default 50 per class)."),
             batch: int = typer.Option(64, "--batch", help="Images per rank per batch."),
             cfg: float = CFG, interval: str = INTERVAL, steps: int = STEPS, sampler: str = SAMPLER,
             mode: str = MODE, ema: str = EMA, seed: int = typer.Option(0, "--seed"), device: str = DEVICE,
             img_size: int = IMG_SIZE, precision: str = PRECISION,
             ref_stats: Path = typer.Option(None, "--ref-stats", help="npz with mu/sigma (jit_in256_stats.npz)."),
             features: str = typer.Option(None, "--features",
                                          help="inception | digits | module:factory (default: as the ref stats)"),
             inception_weights: Path = typer.Option(None, "--inception-weights", help="Local Inception weights."),
             isc: bool = typer.Option(None, "--isc/--no-isc", help="Score the images (IS) even without --ref-stats."),
             npz: bool = typer.Option(False, "--npz", help="Also pack the images into samples.npz."),
             as_json: bool = JSON) -> None:
    """Generate N images over all torchrun ranks (resumable), then FID/IS against reference stats."""
    from jitmodel.evaluate import EvalJob  # lazy: start-up (numpy, pynvml, torch)
    from jitmodel.evaluate import evaluate as run_eval  # lazy: start-up (numpy, pynvml, torch)
    from jitmodel.fid import get_extractor, load_stats  # lazy: start-up (numpy)

    env, dev, autocast, m = _setup(ckpt, ema, img_size, device, precision)
    if features is None:  # the extractor the reference statistics name, else Inception
        features = (load_stats(ref_stats)[2] if ref_stats else None) or "inception"
    extractor = get_extractor(features, str(dev), inception_weights) if (ref_stats or isc) else None
    if batch < 1 or (n is not None and n < 1):
        raise ValueError(f"--batch and --num-images must be >= 1, got {batch} and {n}")
    mc = m.model_cfg
    job = EvalJob(out_dir=out_dir, num_images=n or 50 * mc.num_classes, num_classes=mc.num_classes,
                  img_size=mc.img_size, sample=_sample_cfg(m.sample_defaults, sampler, steps, cfg, interval, mode),
                  in_channels=mc.in_channels, seed=seed, noise_scale=m.diffusion.noise_scale, t_eps=m.diffusion.t_eps,
                  batch=batch, autocast=autocast)
    dist.init_process_group(env, dev)
    try:
        rep = run_eval(m.x_hat, job, extractor=extractor, ref_stats=ref_stats, rank=env.rank,
                       world=env.world_size, device=dev, pack_npz=npz)
        dist.barrier()  # leave together: a gloo rank torn down while its peer still works can abort at exit
    finally:
        dist.destroy_process_group()
    if env.is_main:
        _emit({k: v for k, v in vars(rep).items() if v is not None}, as_json)


@app.command("fid-stats")
def fid_stats(folder: Path = typer.Argument(..., help="Folder of real images (searched recursively)."),
              out: Path = typer.Option(..., "--out", help="npz to write (mu, sigma, n, extractor)."),
              features: str = typer.Option("inception", "--features", help="inception | digits | module:factory"),
              inception_weights: Path = typer.Option(None, "--inception-weights"),
              img_size: int = typer.Option(None, "--img-size", help="Centre-crop and resize to this size first."),
              batch: int = typer.Option(64, "--batch"), device: str = DEVICE, as_json: bool = JSON) -> None:
    """Reference statistics (mu, sigma) of a folder of images, in the format of jit_in256_stats.npz."""
    from jitmodel.dist import pick_device  # lazy: start-up (numpy, pynvml, torch)
    from jitmodel.fid import folder_stats, get_extractor, save_stats  # lazy: start-up (numpy)

    ext = get_extractor(features, str(pick_device(device)), inception_weights)
    mu, sigma, count = folder_stats(folder, ext, batch, img_size)
    save_stats(out, mu, sigma, count, ext.name)
    _emit({"images": count, "dim": int(mu.size), "extractor": ext.name, "out": str(out)}, as_json)


def run(argv: list[str] | None = None) -> int:
    """Run with the error map; returns the exit code."""
    debug = os.environ.get("JITMODEL_DEBUG") == "1"
    try:
        command = plain_help(typer.main.get_command(app))  # help at whole words (jitmodel/helpfmt.py)
        rv = command.main(args=argv, standalone_mode=False, prog_name="jitmodel")
        return rv if isinstance(rv, int) else 0
    except ValueError as e:  # bad input (FeatureExtractorMissing and pydantic's ValidationError included)
        if debug:
            raise
        from pydantic import ValidationError


        msg = validation_summary(e) if isinstance(e, ValidationError) else str(e)
        print(f"Error: {' '.join(msg.split())[:400]}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        if debug:
            raise
        print(f"Error: {e.name} is not installed (pip install 'jitplan[train,eval]')", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Error: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the file system said no (a full disk, a read-only folder): one line
        if debug:
            raise
        print(f"Error: {os_error_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # typer's usage errors and Exit, without importing click
        code, fmt = getattr(e, "exit_code", None), getattr(e, "format_message", None)
        if isinstance(code, int) and callable(fmt):
            print(f"Error: {' '.join(fmt().split())}", file=sys.stderr)
            return 2 if code == 2 else code
        if isinstance(code, int):
            return code
        raise


def main() -> None:
    sys.exit(run())
