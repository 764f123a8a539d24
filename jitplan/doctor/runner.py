"""Run the checks: gather facts once (probe, torch import in a child, plan, dataset, checkpoint), then
call each check ``C1``-``C14`` on the same context. Exit 1 when any check fails.

    >>> from jitplan.hardware.nvml_fake import FakeNvml
    >>> report = run_doctor(nvml=FakeNvml.from_file("tests/data/nvml/no_driver.yaml"), run_torch=False)
    >>> report.by_id("C4").level
    'warn'
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from jitmodel import manifest as mf
from jitplan.dataset.inspect import sample_images, scan_dataset
from jitplan.dataset.prepare import verify_images
from jitplan.doctor import checks_data, checks_gpu, checks_host, checks_torch
from jitplan.doctor.ckpt import read_checkpoint, verify_digests
from jitplan.doctor.context import DoctorContext, short_path
from jitplan.doctor.finding import DoctorReport, Finding
from jitplan.doctor.measure import measure_loader
from jitplan.errors import UsageError
from jitplan.hardware.probe import run_probe
from jitplan.hardware.software import TorchImport, torch_import_check
from jitplan.runs.home import cache_dir
from jitplan.runspec import load_run_spec

CHECKS: list[tuple[str, Callable[[DoctorContext], Finding]]] = [
    ("C1", checks_torch.check_torch_import),
    ("C2", checks_torch.check_cuda_driver),
    ("C3", checks_torch.check_arch),
    ("C4", checks_gpu.check_driver),
    ("C5", checks_gpu.check_gpus),
    ("C6", checks_gpu.check_p2p),
    ("C7", checks_host.check_shm),
    ("C8", checks_host.check_ram),
    ("C9", checks_host.check_cpus),
    ("C10", checks_data.check_dataset),
    ("C11", checks_data.check_checkpoint),
    ("C12", checks_host.check_phases),
    ("C13", checks_host.check_env),
    ("C14", checks_gpu.check_precision),
]
DEEP_SAMPLE_IMAGES = 256
# A healthy ``import torch`` takes 1-10 s, 20-30 s from a cold network disk; past 30 s it is hung (a driver
# call that never returns, a lock on a dead NFS mount) and doctor says so instead of waiting longer.
IMPORT_TIMEOUT_S = 30.0


def _exists(path: str | Path, kind: str) -> bool:
    """``Path.is_dir``/``is_file`` that says False (no traceback) for a name the OS refuses: too long, NUL."""
    try:
        return Path(path).is_dir() if kind == "dir" else Path(path).is_file()
    except (OSError, ValueError):
        return False


def _nameable(path: str | Path) -> bool:
    """Whether the OS accepts the name at all (missing is fine: the probe looks at its nearest ancestor)."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return True
    except (OSError, ValueError):  # ENAMETOOLONG, a NUL byte
        return False
    return True




def _isolated(check_id: str, check: Callable[[DoctorContext], Finding], ctx: DoctorContext) -> Finding:
    """A check that raises becomes a fail finding with the exception's one-line summary."""
    try:
        return check(ctx)
    except Exception as e:  # noqa: BLE001 - one broken check must not hide the others
        if os.environ.get("JITPLAN_DEBUG") == "1":
            raise
        return Finding(id=check_id, level="fail", title=(check.__doc__ or check.__name__).split(":")[0][:40],
                       found=f"the check itself failed: {one_line(e)}",
                       fix="report this with JITPLAN_DEBUG=1 jitplan doctor ... (shows the traceback)")


def one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:200]}" if lines else type(e).__name__


def run_checks(ctx: DoctorContext) -> DoctorReport:
    return DoctorReport(findings=[_isolated(cid, check, ctx) for cid, check in CHECKS])


def _manifest_bad(data: str, scan: Any) -> list[str]:
    """Bad images a verified manifest (jitplan data verify) lists for this dataset; [] when there is none."""

    path = Path(data) / mf.MANIFEST_NAME
    if scan is None or not path.is_file():
        return []
    try:
        bad, _ = mf.check_against(scan.root, scan, mf.load_manifest(path))
    except ValueError as e:
        return [str(e)]
    return [f"{rel}: {why}" for rel, why in bad]


def run_doctor(
    *,
    plan_path: str | Path | None = None,
    data_path: str | Path | None = None,
    checkpoint_path: str | Path | None = None,
    deep: bool = False,
    nccl_timeout_s: float | None = None,
    run_torch: bool = True,
    python: str | None = None,
    cache: bool = True,
    env: Mapping[str, str] | None = None,
    nvml: Any | None = None,
    paths: Any | None = None,
    host_kwargs: dict[str, Any] | None = None,
    import_timeout_s: float = IMPORT_TIMEOUT_S,
) -> DoctorReport:
    """Gather facts and run every check. The keyword seams (nvml, paths, python, env) exist for tests."""

    t0 = time.perf_counter()
    env = dict(os.environ if env is None else env)
    plan = load_run_spec(plan_path) if plan_path is not None else None
    if data_path is not None and not _exists(data_path, "dir"):
        raise UsageError(f"--data {short_path(data_path)}: no such folder")
    if checkpoint_path is not None and not _exists(checkpoint_path, "file"):
        raise UsageError(f"--checkpoint {short_path(checkpoint_path)}: no such file")
    data = str(data_path) if data_path is not None else (plan.train.data.path if plan is not None else None)
    disks = [p for p in (data, ".") if p and _nameable(p)]
    probe = run_probe(nvml=nvml, paths=paths, disk_paths=disks, host_kwargs={"env": env, **(host_kwargs or {})})
    ctx = DoctorContext(probe=probe, plan=plan, data_path=data, nccl_timeout_s=nccl_timeout_s, deep=deep, env=env)
    if run_torch:
        try:
            ctx.torch_import = torch_import_check(python, env=env, cache_dir=cache_dir(env) if cache else None,
                                                  timeout=import_timeout_s)
        except Exception as e:  # noqa: BLE001 - C1 reports it
            ctx.torch_import = TorchImport(ok=False, error=f"doctor could not check the import: {one_line(e)}")
    if data is not None and _exists(data, "dir"):
        try:
            ctx.data, scan = scan_dataset(data)
        except UsageError as e:
            ctx.data_error, scan = e.message, None
        ctx.bad_images = _manifest_bad(data, scan)
        if deep and scan is not None:

            ctx.bad_images += verify_images(sample_images(scan, DEEP_SAMPLE_IMAGES))
            if plan is not None and ctx.data is not None and ctx.data.layout == "imagefolder" and not ctx.bad_images:

                ctx.loader = measure_loader(plan, data, shm=probe.host.shm_path, python=python)
    if checkpoint_path is not None:
        ctx.checkpoint_path = str(checkpoint_path)
        try:
            ctx.checkpoint = read_checkpoint(checkpoint_path)
            if run_torch:  # the digests need the tensors' bytes: checked by torch in a child
                ctx.checkpoint.integrity = verify_digests(checkpoint_path, python)
        except UsageError as e:
            ctx.checkpoint_error = e.message
        except Exception as e:  # noqa: BLE001 - a hostile file: C11 reports it in one line
            ctx.checkpoint_error = f"{checkpoint_path}: cannot read the checkpoint ({one_line(e)})"
    report = run_checks(ctx)
    report.seconds = round(time.perf_counter() - t0, 3)
    return report
