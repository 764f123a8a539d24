"""Compare objectives (x / v / eps prediction, and the loss space) and networks on the same data, seed and budget.

Each *arm* is one ``prediction:loss_space`` setting of ``DiffusionConfig`` and, when models are compared,
one network (the config's JiT, another JiT variant, or a factory such as ``jitmodel.archs.dit:dit_digits``;
jitplan.compare.arms); everything else (data, data order, t/noise draws, optimizer, batch, budget, and the
initial weights when the network is the same) is the base config's. Each arm is a
normal run through the launch path (run folder, torchrun, supervisor, registry), then this process reads
its ``metrics.jsonl`` and ``last.pt`` and scores it the same way for every arm:

* training loss curves (each in its own loss space: values of different spaces are not comparable),
* a common metric: the v-space loss of every arm on one fixed batch, fixed noise and a fixed t grid
  (the quantiles of the training t distribution), through ``jitmodel.objectives``,
* images/s and peak memory (from the trainer's metrics),
* a samples grid per arm (one class per column) and the quality metric the data supports: on ``digits``,
  the accuracy of the digits classifier on class-conditional samples and a Fréchet distance in its
  feature space; FID (Inception) when reference statistics are given.

Results: ``results.json``, ``summary.md``, ``loss.png`` and ``grids/<arm>.png`` under the output folder.

    jitplan compare jitplan/templates/compare/digits.yaml --objectives x,v,eps --steps 300 --out runs/cmp
    jitplan compare plan.yaml --arm x:v --arm eps:eps --minutes 10
    jitplan compare jitplan/templates/compare/digits.yaml --model jit --model jitmodel.archs.dit:dit_digits --steps 1000
    jitplan compare --gpus 1xRTX4090 --recipe JiT-B/16 --data /data/imagenet --arm x:v --arm v:v --images 1e6

    >>> [a.name for a in parse_arms(["x:v", "eps"], None)]
    ['x:v', 'eps:v']
    >>> Budget(steps=100).max_steps(effective_batch=64), Budget(images=1000).max_steps(effective_batch=64)
    (100, 16)
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO, cast

from jitmodel.atomic import atomic_write_text
from jitmodel.progress import TrainLogProgress
from jitplan.compare.arms import parse_arm_text, plan_arms, with_params
from jitplan.compare.models import ModelChoice, count_params, parse_model
from jitplan.compare.plot import _COLORS, _plot_pil, plot_losses
from jitplan.compare.results import (
    ArmResult,
    CompareResult,
    read_metrics,
    summarize_metrics,
    summary_markdown,
)
from jitplan.compare.runners import (
    LocalRunner,
    Runner,
    SSHRunner,
    _StopOnTime,
)
from jitplan.compare.score import Scorer
from jitplan.compare.settings import (
    KINDS,
    Arm,
    Budget,
    arm_train_config,
    make_budget,
    parse_arm,
    parse_arms,
    safe_name,
)
from jitplan.errors import UsageError
from jitplan.launch import local
from jitplan.runspec import RunSpec
from jitplan.runspec import load_run_spec as load_base

Note = Callable[[str], None]

__all__ = ["KINDS", "Arm", "ArmResult", "Budget", "CompareResult", "LocalRunner", "ModelChoice", "Runner",
           "SSHRunner", "Scorer", "arm_train_config", "count_params", "load_base", "make_budget", "parse_arm",
           "parse_arm_text", "parse_arms", "parse_model", "plan_arms", "plot_losses", "read_metrics", "run_compare",
           "summarize_metrics", "summary_markdown", "with_params", "write_outputs", "_COLORS", "_StopOnTime",
           "_notes", "_plot_pil"]


def run_compare(base: RunSpec, arms: list[Arm], budget: Budget, out: str | Path, *,
                runner: Runner | None = None, seed: int | None = None, ema: str | None = None,
                sample_steps: int = 50, per_class: int = 10, ref_stats: str | None = None,
                threads: int | None = None, note: Note | None = None) -> CompareResult:
    """Run every arm with the same data, seed and budget, score them alike, and write the results.

    ``base`` is the run spec every arm starts from (a plan or a bare TrainConfig); ``arms`` come from
    ``parse_arms`` (objectives) or ``plan_arms`` (models too). ``threads`` caps torch's
    CPU threads while scoring (as ``--threads`` does for the ranks: on a busy machine fewer threads are much
    faster). Returns the CompareResult also written to
    ``out/results.json``.
    """
    note = note or (lambda m: None)
    out = Path(out).resolve()
    train = base.train
    if train.data.kind == "latents":
        raise UsageError("jitplan compare scores pixels (digit classifier, FD, FID): latent data is not compared "
                         "yet; compare in pixel space (digits or an image folder)")
    world = base.topology.world_size
    runner = runner or LocalRunner(base)
    weights = ema or train.sample.ema
    if weights not in ("ema1", "ema2", "raw"):
        raise UsageError(f"--ema must be ema1, ema2 or raw, got {weights!r}")
    for arm in arms:
        rdir = out / "arms" / arm.slug
        if rdir.exists() and any(rdir.iterdir()):
            raise UsageError(f"{rdir} already holds a run; choose a new --out folder")
    with _torch_threads(threads):
        if any(a.params is None for a in arms):  # each network built once on meta: sized, checked against the data
            arms = with_params(arms, train)
        return _train_and_score(base, world, runner, arms, budget, out, seed=seed, weights=weights,
                                sample_steps=sample_steps, per_class=per_class, ref_stats=ref_stats, note=note)


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside, restored after (the CLI may run in a longer process)."""
    if not n:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_and_score(base: RunSpec, world: int, runner: Runner, arms: list[Arm],
                     budget: Budget, out: Path, *, seed: int | None, weights: str, sample_steps: int,
                     per_class: int, ref_stats: str | None, note: Note) -> CompareResult:

    train = base.train
    results: list[ArmResult] = []
    run_dirs: dict[str, Path] = {}
    note("preparing the common evaluation (fixed batch, t grid, classifier / reference statistics)")
    scorer = Scorer(train, seed=train.seed if seed is None else seed, ref_stats=ref_stats)
    for arm in arms:
        cfg = arm_train_config(train, arm, budget, seed=seed, world_size=world)
        rdir = out / "arms" / arm.slug
        config = local.prepare_run_dir(base.with_train(cfg), rdir)
        note(f"arm {arm.name}: training in {rdir} ({budget.describe()})")
        t0 = time.monotonic()
        echoing = runner if isinstance(runner, LocalRunner | SSHRunner) else None
        progress = None
        if echoing is not None and echoing.echo is not None and cfg.max_steps and budget.minutes is None:
            progress = TrainLogProgress(f"arm {arm.name}", cfg.max_steps, stream=echoing.echo)  # an ETA, not
            echoing.echo = cast(TextIO, progress)  # a line per logged step
        try:
            status, message = runner.run(rdir, config, minutes=budget.minutes,
                                         name=safe_name(f"compare-{out.name}-{arm.slug}"))
        finally:
            if progress is not None and echoing is not None:
                progress.close()
                echoing.echo = progress.stream
        wall = time.monotonic() - t0
        recs = read_metrics(rdir / "out" / "metrics.jsonl")
        net = cfg.model
        results.append(ArmResult(arm=arm.name, prediction=arm.prediction, loss_space=arm.loss_space,
                                 model=arm.model_label, model_spec=net.factory or net.variant, params=arm.params,
                                 status=status, message=message, run_dir=str(rdir), wall_s=round(wall, 2),
                                 **summarize_metrics(recs)))
        run_dirs[arm.name] = rdir
        note(f"arm {arm.name}: {status}: {message} ({wall:.0f} s)")

    (out / "grids").mkdir(parents=True, exist_ok=True)
    for res in results:
        ckpt = run_dirs[res.arm] / "out" / "last.pt"
        if not ckpt.is_file():
            res.message = (res.message + "; " if res.message else "") + "no checkpoint to score"
            continue
        note(f"arm {res.arm}: scoring {ckpt} ({weights} weights, {sample_steps}-step sampler)")
        scorer.score(res, ckpt, weights=weights, sample_steps=sample_steps, per_class=per_class,
                     grid_path=out / "grids" / f"{run_dirs[res.arm].name}.png",
                     effective_batch=train.effective_batch(world))
    mc = train.model
    result = CompareResult(
        variant=mc.variant, img_size=mc.img_size, patch_dim=mc.spec.patch ** 2 * mc.in_channels,
        hidden=mc.spec.hidden, data=train.data.kind if train.data.kind == "digits" else str(train.data.path),
        budget=budget, seed=train.seed if seed is None else seed, effective_batch=train.effective_batch(world),
        backend=runner.backend, weights=weights, sample_steps=sample_steps, arms=results,
        notes=_notes(results, scorer, budget))
    write_outputs(result, out)
    return result


CHANCE_FACTOR = 1.5  # an accuracy under 1.5x guessing (0.15 for ten digits) is noise


def _notes(results: list[ArmResult], scorer: Scorer, budget: Budget) -> list[str]:
    """The caveats printed under the table. Pure."""
    spaces = sorted({r.loss_space for r in results})
    notes = []
    steps = {r.arm: r.steps for r in results if r.steps is not None}
    sizes = {r.model: r.params for r in results if r.model and r.params}
    if len({r.model_spec for r in results}) > 1 and sizes:
        first = next(iter(sizes.values()))
        notes.append("Networks: " + ", ".join(f"{m} {n:,} trainable parameters" + (
            f" ({(n - first) / first:+.1%})" if n != first else "") for m, n in sizes.items()) +
            ". Every arm has the same data and data order, seed, t / noise / label-dropout draws, optimizer, batch "
            "and budget; the networks' initial weights differ with their architecture. images/s is each network's "
            "speed on this machine (and its load at the time).")
    if budget.minutes is not None and len(set(steps.values())) > 1:
        notes.append("Wall-clock budget: the arms ran different numbers of steps (" +
                     ", ".join(f"{a} {n}" for a, n in steps.items()) + "), which also reflects the machine's "
                     "load at the time; to compare per step (or per image seen) use --steps or --images.")
    if len(spaces) > 1:
        notes.append(f"Training losses are each in their own loss space ({', '.join(spaces)}); their values are not "
                     "comparable across spaces. Compare the common v-space loss instead.")
    if scorer.x is not None:
        notes.append(f"Common v-space loss: every arm's network on the same {scorer.n_fixed} training images, the "
                     f"same noise and {len(scorer.t)} fixed times (quantiles of the logit-normal training t "
                     "distribution), converted to v with jitmodel.objectives (t_eps clamp as in training).")
    if scorer.digits is not None:
        notes.append("Digits accuracy: a small MLP trained on scikit-learn's 8x8 digits classifies class-conditional "
                     "samples (downscaled to 8x8); FD-digits is the Fréchet distance in its 64-d hidden features "
                     f"against all {scorer.n_real} real digits (biased upwards with few samples).")
    elif scorer.ref is None:
        notes.append("No quality metric: the data is not digits and no --ref-stats were given for FID.")
    notes += scorer.notes
    accs = [r.accuracy for r in results if r.accuracy is not None]
    if accs and all(a < CHANCE_FACTOR / 10 for a in accs):
        most = max((r.steps for r in results if r.steps), default=None)
        notes.append(f"Warning: every arm is at chance (digits accuracy {', '.join(f'{a:.2f}' for a in accs)}"
                     "; guessing gives 0.10): the samples are still noise and say nothing about the arms. "
                     "Train longer before comparing" + (f", e.g. --steps {max(most * 5, 3000)}" if most else "") +
                     " (the digits demo reaches 80 % legible at about 1,400 steps of batch 32).")
    failed = [r.arm for r in results if r.status == "failed"]
    if failed:
        notes.append(f"Failed arm(s): {', '.join(failed)}; see their train.log.")
    return notes


def write_outputs(r: CompareResult, out: Path) -> None:
    """results.json and summary.md (atomic), then loss.png."""

    r.files = {"results": "results.json", "summary": "summary.md", "plot": "loss.png",
               **{f"grid {a.arm}": f"grids/{Path(a.grid).name}" for a in r.arms if a.grid}}
    plot_losses(r, out / "loss.png")
    atomic_write_text(out / "results.json", json.dumps(r.model_dump(mode="json"), indent=2) + "\n")
    atomic_write_text(out / "summary.md", summary_markdown(r))


