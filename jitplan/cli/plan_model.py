"""``jitplan plan --model FILE.py:factory`` (or ``package.module:factory``) and ``--recipe dit-xl-2``: plan a
network that is not JiT from a traced training step (docs/models.md).

The profile comes from the cache when the model's source digest is known (one JSON file; no torch, no user
code imported), else from ``jitplan.planner.traced_model`` (FakeTensorMode on the CPU, seconds to a minute)
and is cached under ``$JITPLAN_CACHE_DIR/models`` (else ``$XDG_CACHE_HOME/jitplan``, ``~/.cache/jitplan``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jitmodel import custom
from jitplan.errors import UsageError


def wants_model(text: str | None) -> bool:
    """Whether ``--model``/``--recipe`` names a factory or a family recipe (not a JiT recipe)."""
    if not text:
        return False
    from jitplan.planner.family import is_family  # lazy: CLI start-up

    return custom.looks_like_spec(text) or is_family(text)


def model_cache_dir(env: Any = None) -> Path:
    from jitplan.runs.home import cache_dir  # lazy: CLI start-up

    return cache_dir(os.environ if env is None else env)


def plan_model(text: str, hw: Any, *, json_: bool, strategy: str | None, batch_per_gpu: int | None,
               effective_batch: int | None, memory_fraction: float, out: str | None,
               jit_only: dict[str, object] | None = None, model_kwargs: dict[str, Any] | None = None,
               data: str | None = None) -> None:
    from jitplan.cli._output import emit, note  # lazy: start-up (rich, typer)
    from jitplan.planner.family import is_family, load_family  # lazy: CLI start-up
    from jitplan.planner.traced_model import profile_for  # lazy: CLI start-up
    from jitplan.planner.traced_plan import plan_traced  # lazy: CLI start-up

    given = [flag for flag, value in (jit_only or {}).items() if value not in (None, False)]
    if given:
        raise UsageError(f"{', '.join(given)} plan(s) a JiT recipe; a traced model (--model / dit-xl-2 ...) takes "
                         "--gpus/--hardware, --strategy, --batch-per-gpu, --effective-batch, --memory-fraction, "
                         "--out, --json (docs/models.md)")
    rec = load_family(text) if not custom.looks_like_spec(text) and is_family(text) else None
    spec, kwargs = (rec.factory, rec.factory_kwargs()) if rec else (text, model_kwargs or None)
    try:
        custom.source_file(custom.parse_spec(spec))
        spec = custom.resolved(spec)  # a file's absolute path: the run may start in another folder
    except custom.ModelSpecError as e:
        raise UsageError(str(e)) from None
    cdir = model_cache_dir()
    try:
        prof, cached = profile_for(spec, kwargs, cdir, announce=note)
    except custom.ModelSpecError as e:
        raise UsageError(str(e)) from None
    eff = effective_batch or (rec.reference.batch if rec else 256)
    tp = plan_traced(prof, hw, effective_batch=eff, strategy=strategy, batch_per_gpu=batch_per_gpu,
                     memory_fraction=memory_fraction, cached=cached)
    ref, latent, rhw = None, None, None
    if rec is not None:  # the published run beside yours; a latent recipe: encoding the dataset once (time, disk)
        from jitplan.hardware.spec import hardware_from_flags  # lazy: CLI start-up
        from jitplan.planner.latent import plan_for_recipe  # lazy: CLI start-up

        latent, why = plan_for_recipe(rec.space, hw, tp.train_flops_per_image, tp.micro_batch)
        tp = tp.model_copy(update={"warnings": [*tp.warnings, why]}) if why else tp
        rhw = hardware_from_flags(rec.reference.hardware)
        ref = plan_traced(prof, rhw, effective_batch=rec.reference.batch, strategy="none",
                          batch_per_gpu=max(1, rec.reference.batch // rhw.world_size), memory_fraction=1.0,
                          cached=cached)
    result = {"recipe": rec.model_dump() if rec else None, "reference": ref, "target": tp, "latents": latent}
    if out:  # the run itself: the file jitplan launch runs and jitmodel.train --config reads
        from jitplan.cli.plan_inputs import count_dataset  # lazy: start-up (rich, typer)
        from jitplan.planner.traced_run import traced_run_plan  # lazy: CLI start-up
        from jitplan.schemas import PlanOptions, save_plan  # lazy: CLI start-up

        counted: tuple[int | None, int | None, str] | None = None
        if data is not None and rec is not None and rec.space.kind == "latent":  # an encoded folder, counted
            from jitmodel.dataconfig import latents_count  # lazy: CLI start-up

            n = latents_count(data)
            counted = (n, None, f"--data {data}: no latents manifest here (jitplan data encode writes one): "
                                "planned as ImageNet-1k's train images")
        elif data is not None:
            counted = count_dataset(data)
        run = traced_run_plan(tp, prof, hw, spec=spec, kwargs=kwargs or {}, rec=rec, ref=ref, reference_hw=rhw,
                              options=PlanOptions(config_path=Path(out).name), data_path=data,
                              num_images=counted[0] if counted else None)
        if counted is not None and counted[0] is None:
            run = run.model_copy(update={"warnings": [*run.warnings, counted[2]]})
        save_plan(run, out)
        note(f"plan written to {out}: jitplan launch {out} --local (or --ssh / --vast) runs it")
    from jitplan.cli.plan_model_render import render_traced  # lazy: start-up (rich, typer)

    emit(result, json_mode=json_, render=lambda console: render_traced(console, tp, ref, rec, latent))

