"""Render an sbatch script (srun + torchrun, c10d rendezvous on the allocation's first node).

The template is ``jitplan/templates/launch/sbatch.sh.tmpl``; placeholders are ``{{NAME}}`` and every value that
reaches the shell is quoted with shlex.quote. Pure apart from reading the template.

    >>> from jitplan.launch.torchrun import TorchrunSpec
    >>> spec = TorchrunSpec(nnodes=2, nproc_per_node=8, rdzv_endpoint="head:29400", config="/w/train.yaml")
    >>> script = render_sbatch(spec, job_name="jit-b16", workdir="/w", cpus_per_task=64, gpus_per_node=8)
    >>> "#SBATCH --nodes=2" in script and "--nproc-per-node=8" in script
    True

The job's CPUs (``--cpus-per-task``: one task per node) come from the run, never from the machine that
renders the script (``job_cpus``): the plan's node when it names its CPU count, else its ranks per node
times (data workers + the rank's own process). The script says which, in a comment above the line.
"""

from __future__ import annotations

import re
import shlex

from jitplan.launch.torchrun import TorchrunSpec
from jitplan.runspec import RunSpec
from jitplan.templates import read_template

TEMPLATE = "launch/sbatch.sh.tmpl"
_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")


def fill(template: str, values: dict[str, str]) -> str:
    """Replace every ``{{NAME}}``; a placeholder without a value (or a value without a placeholder) is a bug."""
    names = set(_PLACEHOLDER.findall(template))
    missing, unused = names - values.keys(), values.keys() - names
    if missing or unused:
        raise ValueError(f"template placeholders missing values: {sorted(missing)}; unused values: {sorted(unused)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def job_cpus(run: RunSpec) -> tuple[int, str]:
    """(CPUs per node for the job, where that number came from). Pure.

    A plan whose hardware names the node's CPUs gets the whole node; otherwise each rank needs its data
    workers and its own process. A bare TrainConfig's CPU count is the machine that read it (os.cpu_count),
    which says nothing of a cluster node, so it is not used.
    """
    topo = run.topology
    if run.kind == "plan" and topo.cpus_per_node:
        return topo.cpus_per_node, f"the plan's node: {topo.cpus_per_node} CPUs (hardware.host.cpus), the whole node"
    workers = run.workers.per_rank if run.workers is not None else run.train.data.num_workers
    ranks = topo.nproc_per_node
    return ranks * (workers + 1), (f"{ranks} rank(s) per node x ({workers} data workers + 1 for the rank itself); "
                                   f"the {'plan' if run.kind == 'plan' else 'config'} names no CPU count per node")


def render_sbatch(spec: TorchrunSpec, *, job_name: str, workdir: str, cpus_per_task: int, gpus_per_node: int,
                  log_dir: str | None = None, time_limit: str | None = None, rdzv_port: int = 29400,
                  cpus_source: str = "given by the caller") -> str:
    """The sbatch script for ``spec``: one task per node, each running torchrun with the plan's ranks."""
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", job_name):
        raise ValueError(f"job name may hold letters, digits, '_', '.', '-' only, got {job_name!r}")
    if cpus_per_task <= 0 or gpus_per_node < 0:
        raise ValueError(f"cpus per task must be > 0 and GPUs per node >= 0, got {cpus_per_task}, {gpus_per_node}")
    if not 0 < rdzv_port < 65536:
        raise ValueError(f"rendezvous port must be in 1..65535, got {rdzv_port}")
    if time_limit is not None and not re.fullmatch(r"[0-9:\-]+", time_limit):
        raise ValueError(f"time limit must look like D-HH:MM:SS or HH:MM:SS, got {time_limit!r}")
    q = shlex.quote
    values = {
        "JOB_NAME": job_name,
        "NNODES": str(spec.nnodes),
        "NPROC_PER_NODE": str(spec.nproc_per_node),
        "GPU_LINE": f"#SBATCH --gpus-per-node={gpus_per_node}" if gpus_per_node else "# (CPU only: no GPUs)",
        "CPUS_PER_TASK": str(cpus_per_task),
        "CPUS_SOURCE": " ".join(cpus_source.split()),
        # #SBATCH lines are not shell: sbatch reads the path up to the line's end, so no quoting here.
        "LOG_DIR": (log_dir or workdir).replace("\n", " "),
        "TIME_LINE": f"#SBATCH --time={time_limit}" if time_limit else "# (no time limit set)",
        "WORKDIR": q(workdir),
        "OMP_NUM_THREADS": str(spec.omp_num_threads or max(1, cpus_per_task // spec.nproc_per_node)),
        "PYTHON": q(spec.python),
        "RDZV_PORT": str(rdzv_port),
        "MODULE": q(spec.module),
        "CONFIG": q(spec.config),
    }
    return fill(read_template(TEMPLATE), values)
