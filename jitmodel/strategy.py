"""Memory strategies of the trainer: how the denoiser is wrapped for this run and where its state lives.

Each is a ``TrainConfig.memory`` switch (docs/planning.md, "When it does not fit", says what each saves
and costs; ``jitplan plan`` chooses them):

- ``checkpoint_every: k`` - activation checkpointing of blocks 0, k, 2k, ... (k = 1: every block): their
  activations are recomputed in the backward pass (about one extra forward). Non-reentrant
  ``torch.utils.checkpoint`` inside the block's forward, so state-dict keys do not change and it composes
  with ``torch.compile`` and FSDP2; dropout masks are replayed (the RNG state is preserved).
- ``shard: true`` - FSDP2 ``fully_shard`` per block and on the whole denoiser: parameters, gradients,
  AdamW state and (built on the sharded parameters) both EMAs are split across the ranks; parameters are
  all-gathered for each block's forward/backward and gradients reduce-scattered every micro-step.
  ``shard_gather: auto`` (the default) all-gathers the blocks' parameters in the autocast dtype (FSDP2
  ``MixedPrecisionPolicy(param_dtype=bf16|fp16, reduce_dtype=fp32)``, ``gather_dtype``): half the link bytes
  and half the unsharded memory; the sharded master weights, AdamW and EMAs stay fp32, and so does the
  root (embeddings, position embedding, final layer; ~1%). Matmuls see the same bf16 weights as under
  autocast; elementwise uses of block parameters (RMSNorm weights, qk-norm) see them rounded to bf16.
  Forward inputs are not cast: the residual stream stays fp32. ``shard_gather: fp32`` keeps fp32 gathers
  (the arithmetic of DDP up to the order of sums).
- ``ema_device: cpu`` / ``ema_every: k`` - see ``jitmodel.ema_host``.
- fp16 autocast gets a ``GradScaler`` (``make_scaler``); bf16 and fp32 need none.

Checkpoints stay one self-describing file: ``full_state`` gathers full (unsharded) state dicts on every
rank, ``local_like`` scatters a full tensor back into a sharded one when resuming.

    >>> from jitmodel.config import MemoryConfig
    >>> describe(MemoryConfig(checkpoint_every=2, shard=True, ema_device="cpu"))
    'checkpoint every 2nd block + shard (FSDP2) + EMA on CPU'
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from jitmodel.config import MemoryConfig, TrainConfig
from jitmodel.dist import DistEnv, amp_dtype


def describe(m: MemoryConfig) -> str:
    """A short human name of the strategy mix ('none' when every switch is off)."""
    parts = []
    if m.checkpoint_every:
        k = m.checkpoint_every
        parts.append("checkpoint every block" if k == 1 else f"checkpoint every {k}{'nd' if k == 2 else 'th'} block")
    if m.shard:
        parts.append("shard (FSDP2)" if m.shard_gather == "auto" else "shard (FSDP2, fp32 gathers)")
    if m.ema_device == "cpu":
        parts.append("EMA on CPU")
    if m.ema_every > 1:
        parts.append(f"EMA every {m.ema_every} steps")
    return " + ".join(parts) or "none"


# --------------------------------------------------------------------------- activation checkpointing

def _checkpointed(forward: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    from torch.utils.checkpoint import checkpoint

    def run(*args: Any, **kwargs: Any) -> torch.Tensor:
        if not torch.is_grad_enabled():  # sampling / evaluation: nothing to save
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, preserve_rng_state=True, **kwargs)

    return run


def _module(m: Any) -> torch.nn.Module:
    """A submodule attribute (``nn.Module.__getattr__`` is typed Tensor | Module)."""
    assert isinstance(m, torch.nn.Module), type(m)
    return m


def _blocks(net: Any) -> torch.nn.ModuleList:
    """``net.blocks``: the transformer blocks of a JiT network."""
    blocks = net.blocks
    assert isinstance(blocks, torch.nn.ModuleList), type(blocks)
    return blocks


def checkpoint_blocks(net: torch.nn.Module, every: int) -> int:
    """Checkpoint blocks 0, every, 2*every, ... of ``net.blocks`` in place; returns how many."""
    if every < 1:
        return 0
    done = 0
    for i, block in enumerate(_blocks(net)):
        if i % every == 0:
            block.forward = _checkpointed(block.forward)  # instance attribute: keys and class unchanged
            done += 1
    return done


# --------------------------------------------------------------------------- sharding (FSDP2)

def _mesh(env: DistEnv, device: torch.device) -> Any:
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device.type, (env.world_size,))


def gather_dtype(m: MemoryConfig, amp: torch.dtype | None) -> torch.dtype:
    """The dtype FSDP2 all-gathers parameters in: the autocast dtype under ``shard_gather: auto``, else fp32.

    >>> gather_dtype(MemoryConfig(shard=True), torch.bfloat16), gather_dtype(MemoryConfig(shard=True), None)
    (torch.bfloat16, torch.float32)
    >>> gather_dtype(MemoryConfig(shard=True, shard_gather="fp32"), torch.float16)
    torch.float32
    """
    return amp if m.shard_gather == "auto" and amp is not None else torch.float32


def mp_policy(param_dtype: torch.dtype) -> Any:
    """FSDP2's policy for gathers in ``param_dtype``: gradients reduce-scattered (and kept) in fp32, forward
    inputs left alone (the block's fp32 residual and the denoiser's fp32 targets stay fp32)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32, cast_forward_inputs=False)


def shard_module(denoiser: torch.nn.Module, mesh: Any, param_dtype: torch.dtype = torch.float32) -> None:
    """FSDP2 in place on ``mesh``: one unit per block (gathered one at a time), then the rest of the denoiser;
    parameters all-gathered in ``param_dtype``. The trainer and the planner's tracer both call this."""
    from torch.distributed.fsdp import fully_shard

    kw = {} if param_dtype == torch.float32 else {"mp_policy": mp_policy(param_dtype)}
    for block in _blocks(denoiser.net):
        fully_shard(block, mesh=mesh, **kw)
    # the root (embeddings, frozen pos_embed, final layer: ~1% of the parameters) stays fp32: a bf16 pos_embed
    # would make the residual stream bf16 (patch embedding + pos_embed), the blocks' activations with it
    fully_shard(denoiser, mesh=mesh)


def shard(denoiser: torch.nn.Module, env: DistEnv, device: torch.device,
          param_dtype: torch.dtype = torch.float32) -> None:
    """``shard_module`` on a 1-D mesh of this job's ranks."""
    shard_module(denoiser, _mesh(env, device), param_dtype)


@contextlib.contextmanager
def gathered(denoiser: torch.nn.Module, m: MemoryConfig, amp: torch.dtype | None) -> Iterator[None]:
    """Forwards outside the training step (online evaluation: ``x_hat``, which FSDP2's root hooks do not see)
    on a sharded denoiser: every unit unsharded once (a collective: every rank enters together) and kept so
    while they run, so ranks may sample different numbers of batches; under autocast when the blocks are
    gathered in bf16/fp16 (their weights cannot meet an fp32 activation otherwise). A no-op unsharded."""
    if not m.shard:
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    blocks = [b for b in _blocks(denoiser.net) if isinstance(b, FSDPModule)]
    units = [denoiser, *blocks] if isinstance(denoiser, FSDPModule) else blocks
    state = denoiser._get_fsdp_state() if isinstance(denoiser, FSDPModule) else None
    if state is not None:  # before any training forward (eval at epoch 0): make the denoiser FSDP2's root
        state._lazy_init()  # private (torch 2.13); otherwise block 0 would become a root of its own
    for u in units:
        u.unshard()
    for b in blocks:
        b.set_reshard_after_forward(False)
    dt = gather_dtype(m, amp)
    cast = torch.autocast(next(denoiser.parameters()).device.type, dtype=dt) if dt != torch.float32 else \
        contextlib.nullcontext()
    try:
        with cast:
            yield
    finally:
        for b in blocks:
            b.set_reshard_after_forward(True)  # as shard_module built them
        for u in units:
            u.reshard()


def is_sharded(t: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def full(t: Any) -> Any:
    """The full tensor of a sharded one (a collective: every rank calls it in the same order), on the CPU."""
    if is_sharded(t):
        return t.full_tensor().cpu()
    return t.detach().cpu() if isinstance(t, torch.Tensor) else t


def local_like(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``value`` (a full tensor from a checkpoint) laid out like ``like``: this rank's shard when sharded."""
    if not is_sharded(like):
        return value
    from torch.distributed.tensor import distribute_tensor

    # src_data_rank=None: every rank holds the full tensor (it read the same file); no communication
    d: Any = like  # a DTensor (is_sharded): its mesh and placements
    return distribute_tensor(value.to(like.device, like.dtype), d.device_mesh, d.placements, src_data_rank=None)


def full_optimizer_state(opt: torch.optim.Optimizer) -> dict[str, Any]:
    """``opt.state_dict()`` with every sharded tensor gathered: the plain (unsharded) format."""
    sd = opt.state_dict()
    state = {i: {k: full(v) for k, v in s.items()} for i, s in sorted(sd["state"].items())}
    return {"state": state, "param_groups": sd["param_groups"]}


def optimizer_state_like(sd: Mapping[str, Any], opt: torch.optim.Optimizer) -> dict[str, Any]:
    """A plain optimizer state dict with each per-parameter tensor laid out like its parameter."""
    params = [p for g in opt.param_groups for p in g["params"]]
    ids = [i for g in sd["param_groups"] for i in g["params"]]
    if len(ids) != len(params):
        return dict(sd)  # let load_state_dict say what does not fit
    by_id = dict(zip(ids, params, strict=True))
    state = {}
    for i, s in sd["state"].items():
        p = by_id.get(i)
        state[i] = {k: (local_like(v, p) if p is not None and isinstance(v, torch.Tensor)
                        and tuple(v.shape) == tuple(p.shape) and v.ndim > 0 else v) for k, v in s.items()}
    return {"state": state, "param_groups": sd["param_groups"]}


# --------------------------------------------------------------------------- the whole mix

def prepare(denoiser: torch.nn.Module, cfg: TrainConfig, env: DistEnv, device: torch.device) -> torch.nn.Module:
    """Apply the strategies of ``cfg.memory`` to ``denoiser`` in place; returns the module the step calls
    (the denoiser itself when sharded or alone, else its DDP wrapper). Build the optimizer and EMAs after
    this, on ``denoiser.parameters()`` (FSDP2 replaces them by sharded ones)."""
    m = cfg.memory
    if m.shard and not env.distributed:
        raise ValueError("memory.shard needs more than one process (torchrun --nproc-per-node N, N >= 2)")
    net = _module(denoiser.net)
    checkpoint_blocks(net, m.checkpoint_every)
    if cfg.compile:
        net.compile()  # compiles in place: state-dict keys stay net.*
    if m.shard:
        shard(denoiser, env, device, gather_dtype(m, amp_dtype(cfg.precision, device)))
        return denoiser
    if not env.distributed:
        return denoiser
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(denoiser, device_ids=ids)


def make_scaler(amp: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 autocast (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(device.type) if amp == torch.float16 else None
