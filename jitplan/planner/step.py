"""One optimizer step of a TrainConfig on a HardwareSpec (the time model with the machine's own link, cores
and disk), the strategy comparison's view of it, and one offer planned with its own published figures. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping

from jitmodel.config import TrainConfig
from jitplan.hardware.schema import HardwareSpec
from jitplan.planner import compute, machine, strategy, timing
from jitplan.planner.link import Link, link_for
from jitplan.schemas import Plan, PlanOptions


def plain_step(hardware: HardwareSpec, train: TrainConfig,
               options: PlanOptions | None = None) -> tuple[strategy.PlainStep, int]:
    """``step_time`` as the strategy comparison reads it (jitplan.planner.strategy.PlainStep)."""
    st, spe = step_time(hardware, train, options)
    assert hardware.gpu is not None
    return strategy.plain_step(st, link_for(hardware.gpu, hardware.nodes, hardware.host).bus_gbs), spe


def step_time(hardware: HardwareSpec, train: TrainConfig, options: PlanOptions | None = None,
              link: Link | None = None) -> tuple[timing.StepTime, int]:
    """(the optimizer step's time, term by term; steps per epoch) of ``train`` on ``hardware`` (timing.py), with
    the machine's own link, cores and disk (``hardware.host``; ``link`` overrides the link). The plan's
    estimates and the ranking of cloud offers (providers/ranking.py) both use it."""
    gpu = hardware.gpu
    if gpu is None:
        raise ValueError("step_time needs a GPU in the hardware spec")
    world = hardware.world_size
    st = timing.train_step_time(timing.inputs_for(train, gpu, world_size=world, nodes=hardware.nodes,
                                                  ddp_bucket_view=options.ddp_bucket_view if options else False,
                                                  host=hardware.host, link=link))
    return st, compute.steps_per_epoch(train.data.planned_images, world, train.batch_per_gpu, train.accum_steps)


def plan_offer(plan: Plan, gpu_count: int, fields: Mapping[str, object]) -> machine.OfferEstimate:
    """``plan.train`` on one offer (``gpu_count`` x the plan's GPU) with the offer's own figures (PCIe, cores,
    disk, RAM, download, price: jitplan.hardware.figures keys); what providers/ranking.py ranks by."""
    hw = plan.hardware.model_copy(update={"gpus_per_node": gpu_count, "nodes": 1})

    def step_for(h: HardwareSpec) -> tuple[float, int, str, float]:
        st, spe = step_time(h, plan.train)
        top = max(st.terms, key=lambda t: t.seconds)
        return st.total_s, spe, top.name, top.seconds

    return machine.offer_estimate(hw, plan.train, fields, step_for)
