"""Two "nodes" on localhost: the rendered per-node torchrun commands, run for real (gloo, CPU)."""

from __future__ import annotations

import pytest
import yaml

from jitplan.launch import local
from jitplan.launch.supervisor import checkpoint_step, free_port
from jitplan.launch.torchrun import TorchrunSpec, node_commands


@pytest.mark.slow
def test_two_nodes_on_localhost_train_through_the_rendered_commands(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = {
        "model": {"variant": "JiT-Tiny/4", "img_size": 16, "in_channels": 1, "num_classes": 10},
        "data": {"kind": "digits", "num_workers": 0}, "batch_per_gpu": 8, "world_size": 2, "max_steps": 4,
        "optim": {"warmup_epochs": 0}, "checkpoint": {"every_steps": 2}, "output_dir": "out", "log_every": 1,
        "device": "cpu",
    }
    (run_dir / "train.yaml").write_text(yaml.safe_dump(cfg))
    spec = TorchrunSpec(nnodes=2, nproc_per_node=1, rdzv_endpoint=f"127.0.0.1:{free_port()}", rdzv_id="two-nodes",
                        config="train.yaml", omp_num_threads=1)
    env = local.pythonpath_env()
    procs = [local.start(c, run_dir, cwd=run_dir, env=env, log_name=f"node{c.node_rank}.log")
             for c in node_commands(spec)]
    codes = [p.wait(timeout=300) for p in procs]
    logs = [(run_dir / f"node{r}.log").read_text() for r in (0, 1)]
    assert codes == [0, 0], logs
    both = "\n".join(logs)
    assert "world 2" in both  # the trainer's banner: the two nodes formed one process group
    assert checkpoint_step(run_dir / "out") == 4

