"""``jitplan compare``: train two or more objectives (x / v / eps) or networks for the same budget and compare them.

    jitplan compare jitplan/templates/compare/digits.yaml --objectives x,v,eps --steps 300 --out runs/cmp-digits
    jitplan compare plan.yaml --arm x:v --arm eps:eps --minutes 10 --out runs/cmp   # PRED:LOSS pairs
    jitplan compare jitplan/templates/compare/digits.yaml --model jit --model jitmodel.archs.dit:dit_digits \\
        --steps 1000 --threads 1                                                    # JiT-Tiny/8 vs a DiT of its size
    jitplan compare digits.yaml --model jit,my_model.py:make --objectives x,v --steps 600   # 2 models x 2 objectives
    jitplan compare digits.yaml --arm model=jit --arm model=jitmodel.archs.dit:dit_digits,pred=eps,hidden=128 \\
        --steps 600                                                                 # a factory's arguments
    jitplan compare --gpus 1xRTX4090 --recipe JiT-B/16 --data /data/imagenet --objectives x,v --images 1000000 \\
        --ref-stats jit_in256_stats.npz
    jitplan compare plan.yaml --objectives x,eps --steps 2000 --ssh root@1.2.3.4:2222 --identity ~/.ssh/id_ed25519

PLAN is a plan (``jitplan plan --out``) or a TrainConfig YAML; or give --gpus/--recipe as ``jitplan plan``
does. Writes results.json, summary.md, loss.png and grids/ under --out. See docs/objectives.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from jitplan.cli._output import JsonFlag


def compare(
    plan_file: Path | None = typer.Argument(None, metavar="[PLAN]", help="plan.yaml or a TrainConfig YAML."),
    arm: list[str] | None = typer.Option(None, "--arm", metavar="PRED[:LOSS]|model=SPEC,...",
                                         help="An objective, e.g. x:v, v:v, eps:eps (repeat; LOSS defaults to v), "
                                         "or a network and objective: model=SPEC[,pred=P][,loss=L][,ARG=VALUE...] "
                                         "(ARG: the factory's arguments)."),
    objectives: str | None = typer.Option(None, "--objectives", metavar="x,v,eps",
                                          help="Predictions to compare, each with the v-space loss."),
    model: list[str] | None = typer.Option(None, "--model", "--models", metavar="SPEC",
                                           help="A network to compare (repeat, or a comma list): jit (the config's "
                                           "JiT), base (the config's own network), a JiT variant, FILE.py:factory "
                                           "or package.module:factory. With --objectives: every pair."),
    steps: int | None = typer.Option(None, "--steps", help="Budget: optimizer steps per arm."),
    images: int | None = typer.Option(None, "--images", help="Budget: training images per arm."),
    minutes: float | None = typer.Option(None, "--minutes", help="Budget: wall-clock minutes of training per arm."),
    out: Path | None = typer.Option(None, "--out", help="Results folder (default runs/compare-<time>)."),
    seed: int | None = typer.Option(None, "--seed", min=0, help="Seed of every arm (default: the config's)."),
    gpus: str | None = typer.Option(None, "--gpus", help="Instead of PLAN: GPU spec as for `jitplan plan`."),
    recipe: str = typer.Option("JiT-B/16", "--recipe", help="With --gpus: the reference recipe."),
    data: str | None = typer.Option(None, "--data", help="With --gpus: dataset root holding train/."),
    local_: bool = typer.Option(False, "--local", help="Run the arms on this machine (the default)."),
    ssh: str | None = typer.Option(None, "--ssh", metavar="USER@HOST[:PORT]", help="Run the arms on this SSH host."),
    vast: bool = typer.Option(False, "--vast", help="Rent one Vast.ai instance for the plan; run the arms there."),
    cloud: str | None = typer.Option(None, "--cloud", metavar="PROVIDER",
                                     help="Rent one instance from this cloud provider (by name; --vast is its "
                                     "shorthand)."),
    identity: str | None = typer.Option(None, "--identity", help="SSH private key file."),
    known_hosts: str | None = typer.Option(None, "--known-hosts", help="known_hosts file."),
    accept_new: bool = typer.Option(False, "--accept-new-host-key", help="Trust a host key seen the first time."),
    remote_python: str = typer.Option("python3", "--remote-python", help="Remote interpreter with torch."),
    remote_dir: str = typer.Option("jitplan", "--remote-dir", help="Remote root (relative: under the remote home)."),
    bid: float | None = typer.Option(None, "--bid", help="Cloud: interruptible, bid $/h for the whole instance."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Cloud: do not ask before renting."),
    keep: bool = typer.Option(False, "--keep", help="Cloud: keep the instance at the end (it bills until stopped)."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads of each rank and of the scoring."),
    ema: str | None = typer.Option(None, "--ema", help="Weights to score: ema1, ema2 or raw (default: config)."),
    sample_steps: int = typer.Option(50, "--sample-steps", min=1, help="Sampler steps for the grids/metrics."),
    per_class: int = typer.Option(10, "--per-class", min=1, help="Samples per class (10 classes at most)."),
    ref_stats: str | None = typer.Option(None, "--ref-stats", help="FID reference statistics (npz, mu/sigma)."),
    json_out: JsonFlag = False,
) -> None:
    """Compare objectives or networks on the same data, seed and budget: table, loss plot, sample grids.

    jitplan compare jitplan/templates/compare/digits.yaml --objectives x,v,eps --steps 300

    jitplan compare jitplan/templates/compare/digits.yaml --model jit,jitmodel.archs.dit:dit_digits --steps 1000
    """
    from jitplan import compare as core  # lazy: CLI start-up
    from jitplan.cli._output import emit, err  # lazy: start-up (rich, typer)
    from jitplan.errors import CheckFailed, UsageError  # lazy: CLI start-up

    budget = core.make_budget(steps, images, minutes)
    from jitplan.cli.launch import cloud_choice  # lazy: start-up (rich, typer)

    provider = cloud_choice(cloud, {"--vast": vast})
    chosen = [n for n, on in (("--local", local_), ("--ssh", ssh)) if on] + [f"--cloud {p}" for p in provider]
    if len(chosen) > 1:
        raise UsageError(f"choose one of --local, --ssh, --cloud PROVIDER (or its flag) (got {', '.join(chosen)})")
    base = _base(plan_file, gpus, recipe, data)
    arms = core.plan_arms(base.train, arm, objectives, model, remote=bool(ssh or provider))
    if any(a.model is not None for a in arms):  # before renting anything: every network builds and takes the data
        arms = core.with_params(arms, base.train)
    out_dir = out or Path("runs") / f"compare-{_stamp()}"
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file")
    echo = sys.stderr if not json_out else None

    def note(message: str) -> None:  # plain: "x:v" must not become an emoji nor "[...]" markup
        err.print(message, markup=False, emoji=False, highlight=False, soft_wrap=True)

    release = None
    if ssh or provider:
        runner, release = _remote_runner(base, ssh=ssh, cloud=provider[0] if provider else None, identity=identity,
                                         known_hosts=known_hosts,
                                         accept_new=accept_new, remote_python=remote_python, remote_dir=remote_dir,
                                         bid=bid, yes=yes, echo=echo)
    else:
        runner = core.LocalRunner(base, threads=threads, echo=echo)
    from jitplan.launch.remote import sigterm_as_interrupt  # lazy: CLI start-up

    with sigterm_as_interrupt():
        try:
            result = core.run_compare(base, arms, budget, out_dir, runner=runner, seed=seed, ema=ema,
                                      sample_steps=sample_steps, per_class=per_class, ref_stats=ref_stats,
                                      threads=threads, note=note)
        except BaseException as e:
            if release is not None:  # the run failed or was interrupted: stop the billing all the same
                release(keep, "interrupted" if isinstance(e, KeyboardInterrupt) else "failed")
            raise
    if release is not None:  # the arms' results are home
        release(keep, "finished")
    note(f"results in {out_dir.resolve()}: summary.md, results.json, loss.png, grids/")
    emit(result, json_mode=json_out, render=lambda console: console.print(core.summary_markdown(result),
                                                                           markup=False, soft_wrap=True))
    failed = [a.arm for a in result.arms if a.status == "failed"]
    if failed:
        raise CheckFailed(f"{len(failed)} of {len(result.arms)} arm(s) failed: {', '.join(failed)}",
                          hint=f"see train.log under {out_dir / 'arms'}")


def _stamp() -> str:
    import time

    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())


def _base(plan_file: Path | None, gpus: str | None, recipe: str, data: str | None):
    """The run spec every arm starts from: PLAN (a plan or a TrainConfig), or a plan made for --gpus."""
    from jitplan import compare as core  # lazy: CLI start-up
    from jitplan.errors import UsageError  # lazy: CLI start-up

    if (plan_file is None) == (gpus is None):
        raise UsageError("give a PLAN file or --gpus (with --recipe and --data), not both and not neither")
    if plan_file is not None:
        return core.load_base(plan_file)
    from jitplan.hardware.spec import hardware_from_flags  # lazy: CLI start-up
    from jitplan.planner.plan import make_plan  # lazy: CLI start-up
    from jitplan.runspec import RunSpec  # lazy: CLI start-up
    from jitplan.schemas import PlanOptions, load_recipe  # lazy: CLI start-up

    assert gpus is not None  # one of the two, checked above
    return RunSpec.from_plan(make_plan(hardware_from_flags(gpus), load_recipe(recipe), PlanOptions(data_path=data)))


def _remote_runner(base, *, ssh, cloud, identity, known_hosts, accept_new, remote_python, remote_dir, bid, yes,
                   echo):
    """(the SSH runner, ``release(keep, status)`` for a rented instance or None): ``release`` destroys the
    instance (or, kept, says how to stop it) whether the comparison finished, failed or was interrupted."""
    from jitplan import compare as core  # lazy: CLI start-up
    from jitplan.cli._output import note  # lazy: start-up (rich, typer)
    from jitplan.errors import UsageError  # lazy: CLI start-up
    from jitplan.launch.ssh import SSHOptions, parse_target  # lazy: CLI start-up
    from jitplan.runs.registry import Registry  # lazy: CLI start-up

    registry = Registry()
    release = None
    if ssh:
        target = parse_target(ssh, identity)
    else:
        from jitplan.cli.launch import remote_hooks  # lazy: start-up (rich, typer)
        from jitplan.cloud.provision import Hooks  # lazy: CLI start-up
        from jitplan.cloud.rental import rent_once  # lazy: CLI start-up
        from jitplan.providers.registry import entry  # lazy: CLI start-up

        if base.plan is None:
            raise UsageError(f"{entry(cloud).flag} needs a plan (jitplan plan --out plan.yaml), not a bare "
                             "TrainConfig")
        h = remote_hooks(json_out=False)
        rental = rent_once(base.plan, cloud, "compare", Hooks(say=note, confirm=h.confirm, show_offers=h.show_offers),
                           registry=registry, bid=bid, yes=yes, identity=identity)
        target = rental.got.ssh
        known_hosts = known_hosts or registry.known_hosts
        accept_new = True
        note(f"every arm runs on {rental.provider.title} instance {rental.got.instance_id} "
             f"({rental.got.dph or 0:.3f} $/h) of run {rental.run_id}; it is destroyed when the comparison ends "
             "(--keep keeps it)")
        release = rental.release
    opts = SSHOptions(known_hosts=known_hosts, accept_new_host_key=accept_new, python=remote_python)
    return core.SSHRunner(base, target, opts, remote_dir=remote_dir, echo=echo, registry=registry), release


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
