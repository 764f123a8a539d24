"""``jitplan plan --task sample|evaluate`` and ``--show`` of a saved sampling plan (docs/apple.md).

    jitplan plan --gpus 1xM4-24GB --task sample --num-images 64
    jitplan plan --gpus 1xM4 --task evaluate --out eval-plan.yaml && jitplan plan --show eval-plan.yaml

Thin: options -> ``jitplan.planner.inference_plan.make_inference_plan`` -> render. No torch import.
"""

from __future__ import annotations


def show_inference(path, json_, wide) -> bool:
    """Render a saved sampling/evaluation plan (``kind: inference-plan``); False for any other file."""
    from pathlib import Path

    from pydantic import ValidationError

    from jitmodel.config import read_yaml_mapping, validation_summary  # lazy: CLI start-up
    from jitplan.cli._output import emit  # lazy: start-up (rich, typer)
    from jitplan.cli.plan_render import render_inference  # lazy: start-up (rich, typer)
    from jitplan.errors import UsageError  # lazy: CLI start-up

    try:
        raw = read_yaml_mapping(Path(path), "plan")
    except ValueError as e:
        raise UsageError(str(e)) from None
    if raw.get("kind") != "inference-plan":
        return False
    from jitplan.planner.inference_plan import InferencePlan  # lazy: CLI start-up

    try:
        plan = InferencePlan.model_validate(raw)
    except ValidationError as e:
        raise UsageError(f"{path}: invalid sampling plan: {validation_summary(e)}") from None
    emit(plan, json_mode=json_, render=lambda console: render_inference(console, plan, wide=wide))
    return True


def plan_inference(hw, rec, task, num_images, steps, sampler, batch, attention, memory_fraction, price_per_hour, out,
                   json_, wide):
    """``--task sample|evaluate``: jitplan.planner.inference_plan, rendered like a training plan."""
    from jitmodel.atomic import atomic_write_text  # lazy: CLI start-up
    from jitplan.cli._output import emit, note  # lazy: start-up (rich, typer)
    from jitplan.cli.plan_render import render_inference  # lazy: start-up (rich, typer)
    from jitplan.planner.inference_plan import InferenceOptions, make_inference_plan  # lazy: CLI start-up

    opts = InferenceOptions(task=task, num_images=num_images, steps=steps, method=sampler.value if sampler else None,
                            batch=batch, attention=attention.value if attention else None,
                            memory_fraction=memory_fraction, price_per_hour=price_per_hour)
    plan = make_inference_plan(hw, rec, opts)
    if out:
        import yaml

        atomic_write_text(out, yaml.safe_dump(plan.model_dump(mode="json"), sort_keys=False))
        note(f"plan written to {out}")
    emit(plan, json_mode=json_, render=lambda console: render_inference(console, plan, wide=wide))
