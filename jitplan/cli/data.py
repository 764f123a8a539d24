"""``jitplan data``: inspect a dataset folder; prepare train/ + val/ from flat or ILSVRC layouts.

    jitplan data inspect /data/imagenet256
    jitplan data inspect /data/imagenet256 --json
    jitplan data verify /data/in256                      # decode every image once -> jitmodel-manifest.json
    jitplan data prepare /data/imagenet256 /data/in256 --val-per-class 10 --seed 0
    jitplan data prepare /data/ILSVRC /data/in1k --val-labels /data/LOC_val_solution.csv --copy --verify
    jitplan data encode /data/in256 --out /data/in256-latents --vae ~/vae/sd-vae-ft-ema   # once, resumable
    jitplan data verify /data/in256-latents              # a latents folder: every shard against its manifest
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from jitplan.cli._output import JsonFlag, emit, note
from jitplan.errors import UsageError

data_app = typer.Typer(help="Inspect and prepare image datasets (ImageFolder layout).", no_args_is_help=True)


def _render_report(rep, console: Console) -> None:  # rep: DatasetReport
    t = Table("dataset", "value", show_header=False)
    t.add_row("path", rep.path)
    t.add_row("layout", rep.layout)
    if rep.train_dir:
        t.add_row("class folders in", rep.train_dir)
        t.add_row("classes", f"{rep.classes} ({rep.wnid_fraction:.0%} wnid-named)")
        if rep.class_names:
            more = " ..." if rep.classes > 4 else ""
            t.add_row("first classes", ", ".join(rep.class_names[:4]) + more)
        t.add_row("images", f"{rep.images:,}")
        t.add_row("per class min/median/max", f"{rep.per_class_min} / {rep.per_class_median:g} / {rep.per_class_max}")
        t.add_row("extensions", ", ".join(f"{k} {v:,}" for k, v in rep.extensions.items()) or "-")
        if rep.sizes:
            t.add_row("sizes (sample)", ", ".join(f"{k} x{v}" for k, v in rep.sizes.items()))
    if rep.val_dir:
        t.add_row("val", f"{rep.val_images:,} images ({rep.val_layout}) in {rep.val_dir}")
        if rep.val_layout == "flat":
            t.add_row("val labels", rep.val_labels or "not found")
    if rep.hidden_dirs:
        t.add_row("hidden folders", ", ".join(rep.hidden_dirs) + " (ImageFolder would count them as classes)")
    if rep.empty_classes:
        t.add_row("empty classes", ", ".join(rep.empty_classes[:5]) + (" ..." if len(rep.empty_classes) > 5 else ""))
    if rep.other_files:
        t.add_row("non-image files", str(rep.other_files))
    for prob in rep.problems[:5]:
        t.add_row("problem", prob)
    if rep.links_outside:
        t.add_row("links leaving the dataset", f"{len(rep.links_outside)} not followed, e.g. {rep.links_outside[0]}")
    if rep.links_skipped:
        t.add_row("links not followed", f"{len(rep.links_skipped)} (loops or repeats), e.g. {rep.links_skipped[0]}")
    console.print(t)
    for n in rep.notes:
        console.print(f"note: {n}")


@data_app.command("inspect")
def inspect_cmd(
    path: Path = typer.Argument(..., help="Dataset root."),
    json_out: JsonFlag = False,
) -> None:
    """Layout, classes, images per class, sizes and extensions of a dataset folder.

    jitplan data inspect /data/imagenet256
    """
    from jitplan.dataset.inspect import inspect_dataset  # lazy: CLI start-up

    rep = inspect_dataset(path)
    emit(rep, json_mode=json_out, render=lambda c: _render_report(rep, c))


@data_app.command("verify")
def verify_cmd(
    path: Path = typer.Argument(..., help="Dataset root (the folder holding train/, as data.path)."),
    out: Path | None = typer.Option(None, "--out", help="Manifest file (default PATH/jitmodel-manifest.json)."),
    workers: int | None = typer.Option(None, "--workers", min=1,
                                       help="Decoding processes (default and most: the usable CPUs)."),
    json_out: JsonFlag = False,
) -> None:
    """Decode every image once and write the verified manifest the trainer reads; exit 1 on bad images.

    jitplan data verify /data/in256
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from jitplan.cli._output import err  # lazy: start-up (rich, typer)
    from jitplan.dataset.verify import verify_dataset  # lazy: CLI start-up

    if (path / "latents.json").is_file():  # jitmodel.latents.MANIFEST: a folder `data encode` wrote
        _verify_latents(path, json_out)
        return
    with Progress(TextColumn("decode"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err,
                  transient=True, disable=json_out) as bar:
        task = bar.add_task("decode", total=None)
        res = verify_dataset(path, out=out, workers=workers,
                             progress=lambda done, total: bar.update(task, completed=done, total=total))

    def render(c: Console) -> None:
        c.print(f"{res.images:,} images in {res.classes} classes: {len(res.bad)} bad; decoded {res.decoded:,} "
                f"with {res.workers} process(es) (the rest unchanged since the manifest) in {res.seconds:.1f} s; "
                f"manifest {res.manifest}")
        for n in res.notes:
            c.print(f"note: {n}")

    emit(res, json_mode=json_out, render=render)
    _refuse_bad(res.bad, f"{len(res.bad)} of {res.images} images do not decode",
                "remove them, or set data.skip_bad: true to train without them")


def _verify_latents(path: Path, json_out: bool) -> None:
    from jitmodel import latents  # lazy: numpy + torch, only for a latents folder

    try:
        man = latents.verify(path)
    except latents.LatentsError as e:
        raise UsageError(str(e)) from None
    res = {"path": str(path), "images": man["num_images"], "shards": len(man["shards"]),
           "latent_shape": man["latent_shape"], "views": man["views"], "vae": man["vae"]}
    emit(res, json_mode=json_out, render=lambda c: c.print(
        f"{man['num_images']:,} latents {'x'.join(map(str, man['latent_shape']))} in {len(man['shards'])} shard(s): "
        f"every shard matches its sha256; autoencoder {man['vae'].get('digest')} ({man['vae'].get('source')})"))


@data_app.command("encode")
def encode_cmd(
    path: Path = typer.Argument(..., help="Dataset root (the folder holding train/<class>/*, as data.path)."),
    out: Path = typer.Option(..., "--out", help="Latents folder (created; an unfinished one is continued)."),
    vae: str = typer.Option(..., "--vae", help="A diffusers AutoencoderKL folder (sd-vae-ft-ema), or 'random' "
                                              "(tests: random weights of the real configuration)."),
    image_size: int = typer.Option(256, "--image-size", help="Centre crop size before encoding (latents /8)."),
    batch: int = typer.Option(16, "--batch", help="Images per encoder call."),
    shard_size: int = typer.Option(1024, "--shard-size", help="Images per shard (the unit of resume)."),
    hflip: bool = typer.Option(False, "--hflip", help="Also encode every image's mirror (2x time and disk)."),
    dtype: str = typer.Option("float16", "--dtype", help="float16 (default) or float32 on disk."),
    device: str = typer.Option("auto", "--device", help="auto | cuda | cpu"),
    workers: int = typer.Option(0, "--workers", min=0, help="Image-decoding processes (0: in this process)."),
    json_out: JsonFlag = False,
) -> None:
    """Encode an image folder once into autoencoder latents for a latent model (data.kind: latents).

    jitplan data encode /data/in256 --out /data/in256-latents --vae ~/vae/sd-vae-ft-ema
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from jitplan.cli._output import err  # lazy: start-up (rich, typer)
    from jitplan.dataset.encode import encode_dataset  # lazy: torch and the autoencoder

    with Progress(TextColumn("encode"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err,
                  transient=True, disable=json_out) as bar:
        task = bar.add_task("encode", total=None)
        res = encode_dataset(path, out, vae=vae, image_size=image_size, batch=batch, shard_size=shard_size,
                             hflip=hflip, dtype=dtype, device=device, workers=workers,
                             progress=lambda done, total: bar.update(task, completed=done, total=total))

    def render(c: Console) -> None:
        rate = f" at {res.images_per_s:.1f} images/s on {res.device}" if res.images_per_s else ""
        c.print(f"{res.images:,} images in {res.classes} classes -> {res.out}: latents "
                f"{'x'.join(map(str, res.latent_shape))} x {res.views} view(s) {res.dtype}, {res.shards} shard(s), "
                f"{res.bytes / 1e6:,.1f} MB; encoded {res.encoded:,} now{rate} ({res.resumed_from:,} were done)")
        c.print(f"train on them with data: {{kind: latents, path: {res.out}}} (model.in_channels "
                f"{res.latent_shape[0]}, model.img_size {res.latent_shape[1]})")
        for n in res.notes:
            c.print(f"note: {n}")

    emit(res, json_mode=json_out, render=render)


@data_app.command("prepare")
def prepare_cmd(
    src: Path = typer.Argument(..., help="Flat class folders, or ILSVRC (train/<wnid>/ + flat val/)."),
    dst: Path = typer.Argument(..., help="Output root: train/, val/, classes.json."),
    copy: bool = typer.Option(False, "--copy", help="Copy files instead of symlinking them."),
    val_per_class: int | None = typer.Option(None, "--val-per-class", help="Images per class held out (default 10)."),
    val_fraction: float | None = typer.Option(None, "--val-fraction", help="Fraction per class held out."),
    seed: int = typer.Option(0, "--seed", help="Seed of the deterministic split."),
    val_labels: Path | None = typer.Option(None, "--val-labels",
                                           help="Ground truth for a flat val/ (LOC_val_solution.csv)."),
    verify: bool = typer.Option(False, "--verify", help="Decode every image (PIL) after preparing."),
    json_out: JsonFlag = False,
) -> None:
    """Make DST/train + DST/val (+ classes.json) from SRC; idempotent, never overwrites.

    jitplan data prepare /data/imagenet256 /data/in256 --val-per-class 10
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

    from jitplan.cli._output import err  # lazy: start-up (rich, typer)
    from jitplan.dataset.prepare import prepare_dataset  # lazy: CLI start-up

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err,
                  transient=True, disable=json_out) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        res = prepare_dataset(src, dst, copy=copy, val_per_class=val_per_class, val_fraction=val_fraction,
                              seed=seed, val_labels=val_labels, verify=verify, progress=progress)

    def render(c: Console) -> None:
        c.print(f"{res.layout} -> {res.dst}: {res.classes} classes, {res.train_images:,} train / "
                f"{res.val_images:,} val images ({res.mode}; {res.created:,} new, {res.already:,} already there)")
        if res.split:  # HOOK (newcomer): say how val/ was made
            c.print(res.split)
        if res.verified is not None:
            c.print(f"verified {res.verified:,} images: {len(res.bad_images)} failed to decode")

    emit(res, json_mode=json_out, render=render)
    _refuse_bad(res.bad_images, f"{len(res.bad_images)} of {res.verified} images failed to decode",
                "remove or re-download them, then re-run with --verify")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")


def _refuse_bad(bad: list, message: str, hint: str) -> None:
    """Name the first few images that do not decode on stderr, then fail (exit 1) with ``message``."""
    if bad:
        for b in bad[:5]:
            note(f"bad image: {b}")
        from jitplan.errors import CheckFailed  # lazy: CLI start-up

        raise CheckFailed(message, hint=hint)
