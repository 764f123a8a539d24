"""The bus model against published 1 -> 2 GPU training scaling (no GPU needed; pure arithmetic).

    python benchmarks/bench_bus.py

Published: Lambda's PyTorch training benchmark, fp16 (github.com/lambdal/deeplearning-benchmark,
pytorch/pytorch-train-throughput-fp16.csv for samples/s, pytorch/pytorch-train-bs-fp16.csv for the batch per
run): BERT base (110M parameters) and BERT large (335M) SQuAD fine-tuning on 1 and 2 x RTX 3090, RTX 4090 and
RTX A6000. Predicted: the one-GPU step as Lambda measured it (batch / samples per s) plus the planner's
all-reduce of fp32 gradients (4 B/param; AMP keeps fp32 master weights) over the card's own PCIe 4.0 x16 link
(jitplan.planner.link.link_for: no P2P on GeForce, P2P on the A6000), with OVERLAP_BACKWARD of it hidden.
Scaling = 2 x t1 / t2. Also printed: the planner's own JiT-B/16 (micro 32, no accumulation) 1 -> 2 GPU
scaling on the same cards.
"""

from __future__ import annotations

from dataclasses import dataclass

from jitplan.hardware.catalog import lookup
from jitplan.planner import link as links

PARAMS = {"bert_base": 110e6, "bert_large": 335e6}
BATCH = {"bert_base": 96, "bert_large": 28}  # per GPU (pytorch-train-bs-fp16.csv; the 2-GPU rows are x2)
BATCH_A6000 = {"bert_base": 192, "bert_large": 64}  # 48 GB: larger batches


@dataclass(frozen=True)
class Published:
    gpu: str
    model: str
    one: float  # samples/s on 1 GPU
    two: float  # samples/s on 2 GPUs

    @property
    def scaling(self) -> float:
        return self.two / self.one


PUBLISHED = [  # pytorch-train-throughput-fp16.csv
    Published("RTX 3090", "bert_base", 172, 327), Published("RTX 3090", "bert_large", 52, 89),
    Published("RTX 4090", "bert_base", 297, 541), Published("RTX 4090", "bert_large", 93, 139),
    Published("RTX A6000", "bert_base", 198, 374), Published("RTX A6000", "bert_large", 68, 118),
]


def predicted_scaling(p: Published) -> float:
    gpu = lookup(p.gpu)
    batch = (BATCH_A6000 if p.gpu == "RTX A6000" else BATCH)[p.model]
    t1 = batch / p.one
    link = links.link_for(gpu, 1)
    comm = links.allreduce_s(4 * PARAMS[p.model], 2, link)
    exposed = comm - min(comm, links.OVERLAP_BACKWARD * (2 / 3) * t1)
    return 2 * t1 / (t1 + exposed)


def jit_scaling(gpu_name: str) -> float:
    from jitplan.planner.timing import TimeInputs, train_step_time

    gpu = lookup(gpu_name)
    one = train_step_time(TimeInputs.for_model("JiT-B/16", gpu, micro_batch=32, compile=True)).total_s
    two = train_step_time(TimeInputs.for_model("JiT-B/16", gpu, micro_batch=32, world_size=2, compile=True)).total_s
    return 2 * one / two


def main() -> None:
    print(f"{'GPU':10} {'model':11} {'published':>9} {'predicted':>9} {'error':>7}   link")
    for p in PUBLISHED:
        pred = predicted_scaling(p)
        link = links.link_for(lookup(p.gpu), 1)
        print(f"{p.gpu:10} {p.model:11} {p.scaling:9.2f} {pred:9.2f} {pred / p.scaling - 1:+7.1%}   {link.why}")
    print()
    for g in ("RTX 3090", "RTX 4090", "RTX A6000", "RTX 3060"):
        print(f"JiT-B/16 micro 32, no accumulation, 1 -> 2 x {g}: {jit_scaling(g):.2f}x")


if __name__ == "__main__":
    main()
