"""Memory strategies (jitmodel.strategy, jitmodel.ema_host): each matches plain DDP, and checkpoints cross them.

One torchrun job (gloo, 2 CPU ranks, JiT-Tiny/4 at 8 px on the digits) trains the same 4 optimizer steps
under plain DDP, FSDP2 sharding, activation checkpointing, EMAs on the CPU, all three together, and a
sharded run resumed from the DDP run's step-2 checkpoint; the tests compare what they wrote:

- checkpointing and EMA offload do the same arithmetic as DDP: losses, weights, EMAs and AdamW state are
  bitwise equal (the recompute replays the dropout masks; the host EMA runs the same _foreach ops);
- sharding changes only the order of floating-point sums (reduce-scatter of every micro-step instead of
  one all-reduce of the accumulated gradient; the clip norm summed per shard), so it is compared within
  ``SHARD_RTOL`` on losses and ``SHARD_ATOL`` on weights (why that much: at the constant);
- the sharded checkpoint is one full file: it resumes on one process (another world size) and
  ``jitmodel sample`` reads it;
- under bf16 autocast, FSDP2 all-gathers bf16 parameters (``shard_gather: auto``): gloo carries bf16
  all-gathers, so the sharded bf16-gather run is compared with DDP under the same autocast within
  ``GATHER_RTOL`` (why: at the constant), its checkpoint is full fp32, and it resumes with fp32 gathers.

GPU-only: fp16 autocast on the CPU is emulated (slow, and torch does not pick it), so the fp16 test here
checks the scaler path (scaling, unscale, inf skip, checkpointed scale) and that the digits loss falls;
fp16 throughput and the pinned/overlapped host copy are measured only on a GPU (benchmarks/RESULTS.md).

Run this file under torchrun to produce the runs: ``torchrun --nproc-per-node 2 tests/test_strategies.py OUT``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from jitmodel import checkpoint as C

SHARD_RTOL = 1e-5  # losses: relative, sharded vs DDP
LR = 3e-3
# weights / EMAs: absolute. AdamW divides by sqrt(v): where a gradient is near zero the rounding of the
# reordered sums survives the normalisation, so a weight may differ by ~1e-3 of lr per step (measured
# 4.8e-6 after 4 steps); bound lr x steps x 2e-3. AdamW moments are not normalised: measured 3e-9.
SHARD_ATOL = LR * 4 * 2e-3
MOMENT_ATOL = 1e-7
# bf16 gathers vs DDP, both under bf16 autocast: matmuls see the same bf16 weights, but elementwise uses of block
# parameters (RMSNorm and qk-norm weights) see them rounded to bf16, whose spacing near 1 (2**-8..2**-7) is more
# than one lr=3e-3 update: updates stay invisible to the forward until they accumulate past half a spacing.
# Measured: losses bitwise for 3 steps, 1.7e-5 relative on the 4th; weights' mean |diff| 0.2% of two steps' move.
GATHER_RTOL = 1e-3
STEPS = 4
CASES = {  # name: (memory, precision)
    "ddp": ({}, "auto"),
    "shard": ({"shard": True}, "auto"),
    "ckpt": ({"checkpoint_every": 1}, "auto"),
    "emacpu": ({"ema_device": "cpu"}, "auto"),
    "all": ({"shard": True, "checkpoint_every": 2, "ema_device": "cpu"}, "auto"),
    "ddp_bf16": ({}, "bf16"),
    "shard_bf16": ({"shard": True}, "bf16"),  # shard_gather auto: bf16 all-gathers
}


def base_config(out: Path, world: int = 2, **memory) -> dict:
    return {
        "model": {"variant": "JiT-Tiny/4", "img_size": 8, "num_classes": 10, "proj_dropout": 0.1},
        "data": {"kind": "digits", "num_workers": 0},
        "optim": {"lr": LR, "warmup_epochs": 0.0, "grad_clip": 1.0},
        "diffusion": {"ema_decays": [0.9, 0.5]},  # short horizons: 4 steps move the EMAs visibly
        "batch_per_gpu": 4, "accum_steps": 2, "world_size": world, "max_steps": STEPS, "log_every": 1,
        "checkpoint": {"every_steps": 2, "keep_last": 3},
        "memory": memory, "output_dir": str(out),
    }


def case_config(name: str, out: Path, **memory) -> dict:
    mem, precision = CASES[name]
    return {**base_config(out, **{**mem, **memory}), "precision": precision}


def _drive(root: Path) -> None:
    """Under torchrun: train every case (and the cross-strategy resume) in this one process group."""
    from jitmodel.config import TrainConfig
    from jitmodel.dist import DistEnv, barrier, destroy_process_group
    from jitmodel.train import Trainer

    torch.set_num_threads(1)
    env = DistEnv.from_env()
    try:
        for name in CASES:
            tr = Trainer(TrainConfig.model_validate(case_config(name, root / name)), env)
            tr.fit()
            if tr.cfg.memory.shard:
                _sample_like_online_eval(tr, root / name)
            barrier()
        resume = root / "ddp" / "ckpt" / f"{2:07d}.pt"
        Trainer(TrainConfig.model_validate(base_config(root / "resume_shard", shard=True)), env,
                resume=str(resume)).fit()
        barrier()
        resume = root / "shard_bf16" / "ckpt" / f"{2:07d}.pt"  # bf16 gathers -> fp32 gathers
        Trainer(TrainConfig.model_validate(case_config("shard_bf16", root / "resume_gather", shard_gather="fp32")),
                env, resume=str(resume)).fit()
        barrier()
    finally:
        destroy_process_group()


def _sample_like_online_eval(tr, out: Path) -> None:
    """What online evaluation does on a sharded run: ``x_hat`` (no FSDP2 root hook) inside
    ``strategy.gathered``, a different number of batches on each rank (no collective may run)."""
    from jitmodel.strategy import gathered

    g = torch.Generator().manual_seed(5)
    z, t, y = torch.randn(2, 3, 8, 8, generator=g), torch.full((2,), 0.5), torch.tensor([1, 2])
    tr.denoiser.eval()
    with torch.no_grad(), gathered(tr.denoiser, tr.cfg.memory, tr.amp):
        outs = [tr.denoiser.x_hat(z, t, y) for _ in range(1 + tr.env.rank)]
    tr.denoiser.train()
    (out / f"x_hat.{tr.env.rank}.json").write_text(json.dumps([o.float().abs().mean().item() for o in outs]))


# --------------------------------------------------------------------------- the torchrun job (once)

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "JITMODEL_NO_PROGRESS": "1"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("strategies")
    torchrun = shutil.which("torchrun")
    cmd = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    r = subprocess.run([*cmd, "--standalone", "--nproc-per-node", "2", __file__, str(root)], env=ENV,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return root


def losses(out: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def states(out: Path) -> dict:
    ck = C.load_checkpoint(out / "last.pt")
    assert ck["step"] == STEPS and ck["world_size"] == 2
    return ck


def _opt_tensors(ck: dict) -> list[torch.Tensor]:
    return [v for s in ck["optimizer"]["state"].values() for k, v in sorted(s.items()) if k != "step"]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["ckpt", "emacpu"])
def test_checkpointing_and_ema_offload_are_bitwise_ddp(runs, case):
    assert losses(runs / case) == losses(runs / "ddp") and len(losses(runs / "ddp")) == STEPS
    a, b = states(runs / case), states(runs / "ddp")
    for key in ("model", "ema1", "ema2"):
        assert C.state_fingerprint(a[key]) == C.state_fingerprint(b[key]), key
    assert all(torch.equal(x, y) for x, y in zip(_opt_tensors(a), _opt_tensors(b), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("case", ["shard", "all", "resume_shard"])
def test_sharded_runs_match_ddp_within_reordered_sums(runs, case):
    la, lb = losses(runs / case), losses(runs / "ddp")
    if case == "resume_shard":
        la, lb = la[-2:], lb[-2:]  # it starts at step 2 from the DDP run's checkpoint
    assert la == pytest.approx(lb, rel=SHARD_RTOL)
    a, b = states(runs / case), states(runs / "ddp")
    for key in ("model", "ema1", "ema2"):
        assert a[key].keys() == b[key].keys()
        for k in b[key]:
            assert not hasattr(a[key][k], "device_mesh") and a[key][k].shape == b[key][k].shape  # full tensors
            torch.testing.assert_close(a[key][k], b[key][k], rtol=0, atol=SHARD_ATOL, msg=f"{key} {k}")
    early = C.load_checkpoint(runs / "ddp" / "ckpt" / f"{2:07d}.pt")["model"]
    moved = max((b["model"][k] - early[k]).abs().max().item() for k in early if early[k].is_floating_point())
    assert moved > 100 * SHARD_ATOL  # the tolerance is far below what two steps changed
    for x, y in zip(_opt_tensors(a), _opt_tensors(b), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=MOMENT_ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["shard", "all", "shard_bf16"])
def test_sharded_models_sample_with_every_rank_at_its_own_pace(runs, case):
    """x_hat on the sharded denoiser inside strategy.gathered (online evaluation's path), 1 call on rank 0 and
    2 on rank 1: no hang, the same full weights on both ranks (the same input gives the same output)."""
    r0, r1 = (json.loads((runs / case / f"x_hat.{r}.json").read_text()) for r in (0, 1))
    assert len(r0) == 1 and len(r1) == 2 and r0[0] == r1[0] == r1[1] > 0


@pytest.mark.slow
def test_bf16_gathers_match_ddp_under_the_same_autocast(runs):
    la, lb = losses(runs / "shard_bf16"), losses(runs / "ddp_bf16")
    assert la == pytest.approx(lb, rel=GATHER_RTOL)
    assert la != lb  # the gathers were bf16 (fp32 gathers reproduce DDP's losses to the printed digit)
    a, b = states(runs / "shard_bf16"), states(runs / "ddp_bf16")
    early = C.load_checkpoint(runs / "ddp_bf16" / "ckpt" / f"{2:07d}.pt")["model"]
    for key in ("model", "ema1", "ema2"):  # one full fp32 file whatever the gather dtype
        assert all(v.dtype == torch.float32 and not hasattr(v, "device_mesh") for v in a[key].values()), key
    diff = torch.cat([(a["model"][k] - b["model"][k]).abs().flatten() for k in b["model"]]).mean()
    move = torch.cat([(b["model"][k] - early[k]).abs().flatten() for k in early]).mean()
    assert diff < 0.05 * move, (diff, move)
    # resumed at step 2 with fp32 gathers: the same run up to the gather rounding of two more steps
    assert losses(runs / "resume_gather")[-2:] == pytest.approx(la[-2:], rel=GATHER_RTOL)
    from jitmodel.sample import load_for_sampling

    m = load_for_sampling(str(runs / "shard_bf16" / "last.pt"), ema="ema1", img_size=None, variant=None,
                          device=torch.device("cpu"))
    assert m is not None  # what ``jitmodel sample`` loads


@pytest.mark.slow
def test_the_gather_dtype_follows_the_precision():
    from jitmodel.config import MemoryConfig
    from jitmodel.dist import amp_dtype
    from jitmodel.strategy import gather_dtype, mp_policy

    cpu = torch.device("cpu")
    auto, fp32 = MemoryConfig(shard=True), MemoryConfig(shard=True, shard_gather="fp32")
    want = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "auto": torch.float32}
    for precision, dtype in want.items():  # auto on the CPU is fp32 (no autocast)
        assert gather_dtype(auto, amp_dtype(precision, cpu)) == dtype
        assert gather_dtype(fp32, amp_dtype(precision, cpu)) == torch.float32
    pol = mp_policy(torch.bfloat16)
    assert (pol.param_dtype, pol.reduce_dtype, pol.cast_forward_inputs) == (torch.bfloat16, torch.float32, False)


@pytest.mark.slow
def test_sharded_checkpoint_resumes_on_one_process_and_samples(runs, tmp_path):
    from jitmodel.config import TrainConfig
    from jitmodel.dist import DistEnv
    from jitmodel.train import Trainer

    out = tmp_path / "one"
    cfg = base_config(out, world=1, checkpoint_every=1, ema_device="cpu")
    cfg["max_steps"] = STEPS + 1
    tr = Trainer(TrainConfig.model_validate(cfg), DistEnv(), resume=str(runs / "all" / "last.pt"))
    assert tr.step == STEPS and "world size changed (2 -> 1)" in tr.resume_note
    assert tr.fit() == 0
    assert C.load_checkpoint(out / "last.pt")["step"] == STEPS + 1

    r = subprocess.run([sys.executable, "-m", "jitmodel", "sample", "--ckpt", str(runs / "all" / "last.pt"),
                        "--classes", "3", "--n", "2", "--steps", "2", "--out", str(tmp_path / "s.png")],
                       env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "s.png").stat().st_size > 0


# --------------------------------------------------------------------------- one process

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _net_and_batch(seed: int = 0):
    from jitmodel.config import DiffusionConfig, ModelConfig
    from jitmodel.denoiser import Denoiser

    torch.manual_seed(seed)
    den = Denoiser(ModelConfig(variant="JiT-Tiny/4", img_size=8, num_classes=10, proj_dropout=0.1), DiffusionConfig())
    x, y = torch.rand(4, 3, 8, 8) * 2 - 1, torch.tensor([1, 2, 3, 10])
    return den, x, y


def _loss_and_grads(den, x, y, net=None):
    torch.manual_seed(7)  # dropout masks
    g = torch.Generator().manual_seed(3)  # t, noise, label drop
    loss = (den if net is None else net)(x, y, generator=g)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in den.parameters() if p.grad is not None]


@pytest.mark.parametrize("every,count", [(1, 4), (3, 2)])
@pytest.mark.slow
def test_checkpointed_blocks_give_bitwise_the_same_loss_and_gradients(every, count):
    from jitmodel.strategy import checkpoint_blocks

    den, x, y = _net_and_batch()
    ref = _loss_and_grads(den, x, y)
    den.zero_grad(set_to_none=True)
    keys = list(den.state_dict())
    assert checkpoint_blocks(den.net, every) == count == len(range(0, len(den.net.blocks), every))
    got = _loss_and_grads(den, x, y)
    assert list(den.state_dict()) == keys  # no wrapper prefix: checkpoints are unchanged
    assert torch.equal(ref[0], got[0]) and all(torch.equal(a, b) for a, b in zip(ref[1], got[1], strict=True))


@pytest.mark.slow
def test_checkpointed_blocks_compose_with_torch_compile():
    from jitmodel.strategy import checkpoint_blocks

    den, x, y = _net_and_batch()
    den.eval()  # no dropout: the compiled graph draws its own masks
    ref = _loss_and_grads(den, x, y)
    den.zero_grad(set_to_none=True)
    checkpoint_blocks(den.net, 1)
    den.net.compile(backend="aot_eager")  # dynamo traces through the checkpoint; inductor is GPU-timed
    got = _loss_and_grads(den, x, y)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-6)
    for a, b in zip(got[1], ref[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_host_ema_is_bitwise_the_device_ema_and_every_k_keeps_the_horizon():
    from jitmodel.denoiser import EMA
    from jitmodel.ema_host import HostEMA, build_ema, ema_decays

    den, _, _ = _net_and_batch()
    dev, host = EMA(den, (0.9, 0.5)), HostEMA(den, (0.9, 0.5))
    for _ in range(3):
        with torch.no_grad():
            for p in den.parameters():
                p.add_(torch.randn_like(p))
        dev.update(den)
        host.update(den)
    for which in ("ema1", "ema2"):
        assert C.state_fingerprint(dev.state_dict(which)) == C.state_fingerprint(host.state_dict(which))
    before = [p.detach().clone() for p in den.parameters()]
    with host.swap_in(den, "ema2"):
        assert torch.equal(next(den.parameters()), dev.shadows[1][0])
    assert all(torch.equal(a, p) for a, p in zip(before, den.parameters(), strict=True))
    # every k steps with d**k: after k steps the weight of the start is the same d**k either way
    assert build_ema(den, (0.9999, 0.9996), "same", 8).decays == pytest.approx(ema_decays((0.9999, 0.9996), 8))
    assert (1 / (1 - 0.9999)) == pytest.approx(8 / (1 - 0.9999 ** 8), rel=1e-3)  # horizon in images kept


def test_sharding_one_process_is_refused():
    from jitmodel.config import TrainConfig
    from jitmodel.dist import DistEnv
    from jitmodel.strategy import prepare

    den, _, _ = _net_and_batch()
    cfg = TrainConfig.model_validate(base_config(Path("unused"), world=1, shard=True))
    with pytest.raises(ValueError, match="more than one process"):
        prepare(den, cfg, DistEnv(), torch.device("cpu"))


@pytest.mark.slow
def test_fp16_with_the_scaler_learns_the_digits(tmp_path):
    """On the CPU fp16 autocast is emulated; this checks the scaler path end to end (scale, unscale, skip on
    inf, scale saved and resumed) and that the loss falls. fp16 speed is a GPU matter."""
    from jitmodel.config import TrainConfig
    from jitmodel.dist import DistEnv
    from jitmodel.train import Trainer

    cfg = base_config(tmp_path / "o", world=1)
    cfg.update(precision="fp16", max_steps=24, log_every=8, accum_steps=1, batch_per_gpu=16)
    tr = Trainer(TrainConfig.model_validate(cfg), DistEnv())
    assert tr.amp == torch.float16 and tr.scaler is not None
    assert tr.fit() == 0
    ls = losses(tmp_path / "o")
    assert ls[-1] < 0.7 * ls[0], ls
    ck = C.load_checkpoint(tmp_path / "o" / "last.pt")
    assert ck["scaler"]["scale"] > 0 and ck["train_config"]["precision"] == "fp16"


if __name__ == "__main__":
    _drive(Path(sys.argv[1]))
