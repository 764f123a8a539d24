"""``jitplan probe``: GPUs (NVML), host limits (cgroup, /dev/shm, disk) and torch, without importing torch.

    jitplan probe                         # rich tables
    jitplan probe --json                  # the full report as JSON
    jitplan probe --out hardware.yaml     # the HardwareSpec that `jitplan plan --hardware` reads
    jitplan probe --deep                  # also import torch in a child process (arch list, NCCL, cuDNN)

No NVIDIA driver is an answer, not an error: the report says so and the exit code is 0.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from jitplan.cli._output import JsonFlag, emit, note, print_next

NO_GPU_NEXT = ("plan for the GPUs you will train on, or train the tiny model on this CPU:",
               ["jitplan plan --gpus 2xRTX3060 --host-ram 24GB", "jitplan plan --gpus cpu --out plan.yaml"])


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.1f} GiB"


def _fold(table: Table) -> Table:
    """Long values (paths, GPU names) fold onto the next line instead of being cut with an ellipsis."""
    for col in table.columns:
        col.overflow = "fold"
    return table


def _v(x: object) -> str:
    return "-" if x is None else str(x)


def render(report, console: Console) -> None:  # report: ProbeReport
    nv, host, torch = report.nvml, report.host, report.torch
    if not nv.available:
        console.print(Text.assemble(("GPUs:", "bold"), f" none visible. {nv.error}"))
    else:
        console.print(f"[bold]Driver[/] {nv.driver_version} (max CUDA {nv.driver_cuda}), {len(nv.gpus)} GPU(s)")
        t = Table("#", "name", "memory free/total", "cc", "PCIe cur (max)", "power limit (default)",
                  "SM clock / max", "MIG", "procs")
        for g in nv.gpus:
            pcie = f"Gen{_v(g.pcie_gen)} x{_v(g.pcie_width)} (Gen{_v(g.pcie_gen_max)} x{_v(g.pcie_width_max)})"
            power = f"{_v(g.power_limit_w)} W ({_v(g.power_default_limit_w)} W)"
            t.add_row(str(g.index), g.name, f"{_gib(g.memory_free_bytes)} / {_gib(g.memory_total_bytes)}",
                      _v(g.compute_capability), pcie, power, f"{_v(g.sm_clock_mhz)} / {_v(g.sm_clock_max_mhz)} MHz",
                      g.mig_mode or "n/a", str(len(g.processes)))
        console.print(_fold(t))
        if nv.p2p:
            p = Table("P2P read / topology", *[f"GPU{i}" for i in range(len(nv.p2p))])
            for i, row in enumerate(nv.p2p):
                cells = [c if c == "X" else f"{c} / {nv.topology[i][j] if nv.topology else '?'}"
                         for j, c in enumerate(row)]
                p.add_row(f"GPU{i}", *cells)
            console.print(_fold(p))
    h = Table("host", "value", show_header=False)
    h.add_row("OS / kernel", f"{host.os} / {host.kernel}")
    h.add_row("Python", host.python)
    h.add_row("container", host.container or "no (or not detected)")
    quota = f", cgroup quota {host.cpu_quota:g}" if host.cpu_quota else ""
    h.add_row("CPUs usable", f"{host.cpus_usable} (affinity {host.cpus_affinity}{quota}, host {host.cpus_host})")
    lim = (f"cgroup {host.cgroup_version} limit {_gib(host.ram_limit_bytes)}" if host.ram_limit_bytes
           else "no cgroup limit")
    h.add_row("RAM usable", f"{_gib(host.ram_bytes)} ({lim}; host {_gib(host.ram_host_bytes)})")
    if host.oom_kills:
        h.add_row("OOM kills (cgroup)", str(host.oom_kills))
    h.add_row("/dev/shm", f"{_gib(host.shm_total_bytes)} total, {_gib(host.shm_free_bytes)} free ({host.shm_path})")
    for d in host.disks:  # where it was measured, when that is not the folder asked about (a parent that exists)
        at = "" if Path(d.mount_probe).resolve() == Path(d.path).resolve() else f" ({d.mount_probe})"
        h.add_row(f"disk {d.path}", f"{_gib(d.free_bytes)} free of {_gib(d.total_bytes)}{at}")
    memlock = "unlimited" if host.memlock_limit == -1 else _v(host.memlock_limit)
    h.add_row("open files / memlock", f"{_v(host.nofile_limit)} / {memlock}")
    for k, val in host.env.items():
        h.add_row(f"${k}", val)
    console.print(_fold(h))
    s = Table("torch", "value", show_header=False)
    if not torch.installed:
        s.add_row("torch", "not installed")
    else:
        s.add_row("version", _v(torch.version))
        s.add_row("CUDA build", torch.cuda or "none (CPU build)")
        s.add_row("installer", _v(torch.installer))
        for k, val in torch.packages.items():
            s.add_row(k, val)
    imp = report.torch_import
    if imp is not None:
        if imp.ok:
            s.add_row("import", f"ok in {imp.seconds} s")
            s.add_row("arch list", " ".join(imp.arch_list) or "-")
            s.add_row("NCCL / cuDNN", f"{_v(imp.nccl)} / {_v(imp.cudnn)}")
            s.add_row("CUDA available", f"{imp.cuda_available} ({imp.device_count} device(s))")
        else:
            s.add_row("import", f"FAILED: {imp.error} (run `jitplan doctor`)")
    console.print(_fold(s))
    for n in report.notes:
        if nv.available or not nv.error or nv.error not in n:  # the GPU line above already said it
            console.print(Text(f"note: {n}"))
    if not nv.available:
        print_next(console, *NO_GPU_NEXT)


def probe(
    json_out: JsonFlag = False,
    out: Path | None = typer.Option(None, "--out", help="Write the HardwareSpec YAML (for `jitplan plan --hardware`)."),
    deep: bool = typer.Option(False, "--deep", help="Also import torch in a child process (arch list, NCCL)."),
    disk: list[str] = typer.Option(["."], "--disk", help="Where data/checkpoints go (free space); repeatable."),
    replay_nvml: Path | None = typer.Option(None, "--replay-nvml", hidden=True, help="Recorded NVML answers."),
    host_root: Path | None = typer.Option(None, "--host-root", hidden=True, help="Re-root cgroup, /proc, /dev/shm."),
) -> None:
    """Probe this machine: GPUs, host limits as the container sees them, and torch.

    jitplan probe --out hardware.yaml && jitplan plan --hardware hardware.yaml
    """
    from jitplan.errors import UsageError  # lazy: CLI start-up
    from jitplan.hardware.host import HostPaths  # lazy: CLI start-up
    from jitplan.hardware.nvml_fake import FakeNvml  # lazy: CLI start-up
    from jitplan.hardware.probe import run_probe  # lazy: CLI start-up

    nvml = None
    if replay_nvml is not None:
        if not replay_nvml.is_file():
            raise UsageError(f"recorded NVML file not found: {replay_nvml}")
        nvml = FakeNvml.from_file(replay_nvml)
    paths = HostPaths.under(host_root) if host_root is not None else None
    report = run_probe(nvml=nvml, paths=paths, disk_paths=disk, deep=deep)
    if out is not None:
        import yaml

        from jitmodel.atomic import atomic_write_text  # lazy: CLI start-up

        if out.exists() and out.is_dir():
            raise UsageError(f"--out {out} is a directory")
        spec = report.to_hardware_spec()
        atomic_write_text(out, yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
        if spec.gpu is None:
            note(f"wrote {out} (HardwareSpec: host limits only, no GPU); `jitplan plan --hardware {out}` plans the "
                 "tiny model on this CPU; plan for GPUs with --gpus, or probe the GPU machine")
        else:
            note(f"wrote {out} (HardwareSpec: {spec.gpus_per_node} x {spec.gpu.name}); next: "
                 f"jitplan plan --hardware {out} --out plan.yaml")
    emit(report, json_mode=json_out, render=lambda c: render(report, c))


def register(app: typer.Typer) -> None:
    app.command("probe")(probe)
