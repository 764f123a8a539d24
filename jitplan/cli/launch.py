"""``jitplan launch``: run a plan here, on any SSH host, on a rented cloud instance, or write a Slurm script.

    jitplan launch plan.yaml --local                          # doctor, torchrun, supervised (OOM/SIGTERM -> resume)
    jitplan launch plan.yaml --ssh root@1.2.3.4:2222 --identity ~/.ssh/id_ed25519
    jitplan launch plan.yaml --vast --bid 0.30 --yes          # rent (= --cloud vast), then the SSH path
    jitplan launch plan.yaml --slurm job.sbatch               # 2 nodes: srun + torchrun, c10d
    jitplan launch plan.yaml --local --dry-run                # print every command, run nothing

PLAN is a plan (``jitplan plan --out``) or a bare TrainConfig YAML (e.g. a demo's ``train.yaml``). A cloud
is named by ``--cloud NAME`` or its shorthand flag; both go through ``jitplan.providers.registry``.
See docs/launch.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from jitplan.cli._output import JsonFlag, emit, err, note
from jitplan.cli.next_steps import print_after_training
from jitplan.errors import CheckFailed, UsageError


def _render(res: dict):
    def render(console) -> None:
        for line in res.get("commands", []):
            console.print(line, markup=False, soft_wrap=True)  # one command per line: copy-pasteable
        if res.get("message"):
            console.print(res["message"], markup=False, soft_wrap=True)
    return render


def launch(
    plan_file: Path = typer.Argument(..., metavar="PLAN", help="plan.yaml (jitplan plan --out) or a TrainConfig YAML."),
    local_: bool = typer.Option(False, "--local", help="Run on this machine, supervised."),
    ssh: str | None = typer.Option(None, "--ssh", metavar="USER@HOST[:PORT]", help="Run on this SSH host."),
    vast: bool = typer.Option(False, "--vast", help="Rent a Vast.ai instance for the plan, then run over SSH."),
    cloud: str | None = typer.Option(None, "--cloud", metavar="PROVIDER",
                                     help="Rent from this cloud provider (by name; --vast is its shorthand)."),
    slurm: Path | None = typer.Option(None, "--slurm", metavar="OUT.sbatch", help="Write an sbatch script."),
    identity: str | None = typer.Option(None, "--identity", help="SSH private key file."),
    known_hosts: str | None = typer.Option(None, "--known-hosts",
                                           help="known_hosts file (default: ~/.ssh/known_hosts)."),
    accept_new: bool = typer.Option(False, "--accept-new-host-key", help="Trust a host key seen the first time."),
    remote_dir: str = typer.Option("jitplan", "--remote-dir", help="Remote root (relative: under the remote home)."),
    remote_python: str = typer.Option("python3", "--remote-python", help="Remote interpreter with torch."),
    create_env: bool = typer.Option(False, "--create-env", help="Create a venv on the remote and pip install."),
    data: Path | None = typer.Option(None, "--data", help="Upload this dataset folder (SSH/cloud)."),
    detach: bool = typer.Option(False, "--detach", help="SSH: return once training started; do not follow logs."),
    tmux: bool = typer.Option(False, "--tmux", help="SSH: start in a tmux session instead of setsid/nohup."),
    bid: float | None = typer.Option(None, "--bid", help="Cloud: interruptible, bidding this $/h for the whole "
                                     "instance (all its GPUs together, not per GPU)."),
    keep: bool = typer.Option(False, "--keep", help="Cloud: keep the instance if the launch fails (it keeps "
                              "billing; the stop command is printed)."),
    instance: int | None = typer.Option(None, "--instance", help="Cloud: attach to this existing instance."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Cloud: do not ask before renting."),
    run_dir: Path | None = typer.Option(None, "--run-dir",
                                        help="Local run folder (default runs/<variant>-<px>-<time>)."),
    rdzv_endpoint: str | None = typer.Option(None, "--rdzv-endpoint", help="Multi-node: node 0's host:port."),
    max_restarts: int = typer.Option(3, "--max-restarts", min=0, help="Local: restarts after OOM/SIGTERM. Cloud: "
                                     "new instances (resuming from the last pull) after one is lost."),
    max_hours: float | None = typer.Option(None, "--max-hours",
                                           help="SSH/cloud: stop (checkpoint, pull) before this many hours."),
    budget: float | None = typer.Option(None, "--budget",
                                        help="Cloud: stop (checkpoint, pull) before this many dollars at the "
                                        "offer's $/h. Local: stop with a checkpoint once the run's re-plan costs "
                                        "more."),
    no_doctor: bool = typer.Option(False, "--no-doctor", help="Skip the preflight doctor."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print every command it would run; run nothing."),
    json_out: JsonFlag = False,
) -> None:
    """Launch a plan: --local | --ssh USER@HOST[:PORT] | --vast | --slurm OUT.sbatch.

    jitplan launch plan.yaml --local --max-restarts 3
    """
    from jitplan.launch import local  # lazy: CLI start-up
    from jitplan.runspec import load_run_spec  # lazy: CLI start-up

    provider = cloud_choice(cloud, {"--vast": vast})
    chosen = [n for n, on in (("--local", local_), ("--ssh", ssh), ("--slurm", slurm)) if on]
    chosen += [f"--cloud {p}" for p in provider]
    if len(chosen) != 1:
        raise UsageError("choose exactly one of --local, --ssh USER@HOST[:PORT], --cloud PROVIDER (or its flag), "
                         "--slurm OUT.sbatch" + (f" (got {', '.join(chosen)})" if chosen else ""))
    run = load_run_spec(plan_file)
    train = run.train
    name = local.run_name(train.model.label, train.model.img_size)
    rdir = (run_dir or Path("runs") / name).resolve()
    backend = provider[0] if provider else chosen[0].lstrip("-")
    res: dict = {"backend": backend, "name": name, "run_dir": str(rdir), "commands": []}
    if not dry_run and slurm is None:  # the registry must be usable before a run folder or a rent exists
        from jitplan.runs.registry import Registry  # lazy: CLI start-up

        Registry().close()

    if slurm is not None or local_:
        from jitplan.launch.here import launch_local, write_sbatch  # lazy: CLI start-up

        if slurm is not None:
            out = write_sbatch(run, plan_file=plan_file, out=slurm, name=name, run_dir=rdir,
                               rdzv_endpoint=rdzv_endpoint, dry_run=dry_run)
        else:
            out = launch_local(run, plan_file=plan_file, run_dir=rdir, name=name, rdzv_endpoint=rdzv_endpoint,
                               max_restarts=max_restarts, doctor=not no_doctor, dry_run=dry_run,
                               echo=None if json_out else sys.stderr, say=note, fresh=run_dir is None,
                               budget=budget)  # HOOK (replan): the trainer stops over budget
        res, rdir = out.model_dump(exclude_none=True), Path(out.run_dir)  # a claimed folder may be NAME-2
        emit(res, json_mode=json_out, render=_render(res))
        if out.status == "failed" and "(exit code 2)" in (out.message or ""):  # the trainer refused its input
            if not json_out:  # its own Error: line was echoed above: one voice, then where the log is
                print(f"hint: run {out.run_id}; log: {rdir / 'train.log'}", file=sys.stderr)
                raise typer.Exit(2)
            raise UsageError(f"the trainer refused its input (its Error: line above); run {out.run_id}",
                             hint=f"log: {rdir / 'train.log'}")
        if out.status == "failed":
            raise CheckFailed(out.message or "the run failed",
                              hint=f"jitplan status {out.run_id}; log: {rdir / 'train.log'}")
        if local_ and not dry_run and not json_out and out.run_id and out.status in ("finished", "stopped"):
            print_after_training(err, out.run_id, rdir, digits=train.data.kind == "digits",  # HOOK: newcomer
                                 num_classes=train.model.num_classes)
        return

    from jitplan.launch.remote import CloudOptions, RemoteRequest, launch_remote  # lazy: CLI start-up

    req = RemoteRequest(
        plan_file=plan_file, run_dir=rdir, name=name, ssh=ssh, identity=identity, known_hosts=known_hosts,
        accept_new_host_key=accept_new, remote_dir=remote_dir, remote_python=remote_python, create_env=create_env,
        data=data, detach=detach, tmux=tmux, rdzv_endpoint=rdzv_endpoint, doctor=not no_doctor and run.kind == "plan",
        dry_run=dry_run, max_hours=max_hours, budget=budget, max_recoveries=max_restarts,
        cloud=CloudOptions(provider=provider[0], bid=bid, instance=instance, yes=yes, keep=keep) if provider else None,
    )
    if req.cloud is not None:
        from jitplan.cloud.launch import launch_cloud  # lazy: CLI start-up

        rres = launch_cloud(run, req, remote_hooks(json_out))
    else:
        rres = launch_remote(run, req, remote_hooks(json_out))
    res.update(rres.model_dump(exclude_none=True))
    if not dry_run:
        res["message"] = (f"run {rres.run_id} on {rres.target}: {rres.status}"
                          + (f" (exit code {rres.exit_code})" if rres.exit_code is not None else ""))
    emit(res, json_mode=json_out, render=_render(res))
    if rres.status == "failed":
        raise CheckFailed(res["message"], hint=f"jitplan logs {rres.run_id}")


def remote_hooks(json_out: bool):
    """Progress and prompts on stderr; the followed log on stdout (stderr with --json)."""
    from jitplan.launch.remote import RemoteHooks  # lazy: CLI start-up
    from jitplan.providers.ranking import offers_table  # lazy: CLI start-up

    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    return RemoteHooks(
        say=note,
        confirm=(lambda q: typer.confirm(q, default=False, err=True)) if interactive else None,
        show_offers=lambda ranked, top, title: err.print(offers_table(ranked, provider=title, top=top)),
        out=sys.stderr if json_out else sys.stdout,
    )


def cloud_choice(name: str | None, flags: dict[str, bool]) -> list[str]:
    """The provider names asked for: ``--cloud NAME`` and each shorthand flag given (mapped by the registry)."""
    from jitplan.providers.registry import by_flag, entry  # lazy: CLI start-up

    out = [entry(name).name] if name is not None else []
    return out + [by_flag(flag).name for flag, on in flags.items() if on]


def register(app: typer.Typer) -> None:
    app.command("launch")(launch)
