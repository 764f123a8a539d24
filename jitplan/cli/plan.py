"""``jitplan plan``: adapt a reference JiT recipe to the GPUs you have, with every number explained.

    jitplan plan --gpus 2xRTX3060 --host-ram 24GB                  # the seed case: 2 consumer cards
    jitplan plan --gpus 8xH100 --out plan.yaml                     # write the plan jitmodel.train reads
    jitplan plan --gpus 2x8xH100 --rdzv-endpoint 10.0.0.1:29400    # two nodes, c10d rendezvous
    jitplan plan --gpus 1xRTX4090 --policy scale-lr --lr-scaling sqrt --json
    jitplan plan --gpus 1xMYCARD --gpu-mem 20GB --gpu-tflops 80    # an uncatalogued card
    jitplan plan --hardware hardware.yaml --trace                  # from `jitplan probe --out`, traced memory
    jitplan plan --show plan.yaml                                  # render a saved plan
    jitplan plan --list-gpus                                       # the GPU catalog with its sources
    jitplan plan --gpus 1xM4-24GB --task sample --num-images 64    # sampling a checkpoint on a Mac (MPS)
    jitplan plan --gpus 1xM4 --task evaluate                       # FID over 50,000 images: memory, batch, time

Thin: parse -> ``jitplan.planner.plan.make_plan`` -> render. No torch import unless ``--trace``.
"""

from __future__ import annotations

import os
from enum import Enum

import typer

from jitplan.cli._output import JsonFlag
from jitplan.cli.plan_render import WIDE_COLUMNS, render_catalog, render_plan


class _Policy(str, Enum):
    keep_batch = "keep-batch"
    scale_lr = "scale-lr"


class _LrScaling(str, Enum):
    linear = "linear"
    sqrt = "sqrt"


class _Task(str, Enum):
    train = "train"
    sample = "sample"
    evaluate = "evaluate"


class _Sampler(str, Enum):
    heun = "heun"
    euler = "euler"


class _Attention(str, Enum):
    exact = "exact"
    sdpa = "sdpa"


def plan_command(
    gpus: str | None = typer.Option(None, "--gpus", help="GPU spec: RTX3060, 2xRTX3060, 8xH200, 2x8xH100 "
                                    "(nodes x GPUs); "
                                    "a Mac: 1xM4, 1xM4Pro-48GB (unified memory)."),
    task: _Task = typer.Option(_Task.train, "--task", help="train (default), or sample / evaluate a checkpoint of the "
                               "recipe (memory, batch, time per image; Apple MPS too)."),
    num_images: int | None = typer.Option(None, "--num-images", min=1, help="sample/evaluate: images (64 / 50,000)."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="sample/evaluate: sampling steps (recipe: 50)."),
    sampler: _Sampler | None = typer.Option(None, "--sampler", help="sample/evaluate: heun (recipe) or euler."),
    hardware: str | None = typer.Option(None, "--hardware", help="A HardwareSpec YAML (jitplan probe --out)."),
    recipe: str | None = typer.Option(None, "--recipe", "--model", help="Reference recipe: JiT-B/16 (default), "
                                      "JiT-L/16, JiT-H/16, JiT-B/32, JiT-L/32, JiT-H/32, or a YAML path; "
                                      "dit-b-2, dit-xl-2, sit-xl-2, uvit-h-2; or your own model: FILE.py:factory "
                                      "(docs/models.md)."),
    model_arg: list[str] | None = typer.Option(None, "--model-arg", metavar="NAME=VALUE",
                                               help="An argument of your model's factory (repeat): depth=4."),
    gpu_mem: str | None = typer.Option(None, "--gpu-mem", help="GPU memory for an uncatalogued card (24GB)."),
    gpu_tflops: float | None = typer.Option(None, "--gpu-tflops", help="Dense bf16 TFLOPS (fp32 accumulate)."),
    gpu_bw: float | None = typer.Option(None, "--gpu-bw", help="Memory bandwidth, GB/s."),
    host_ram: str | None = typer.Option(None, "--host-ram", help="Host RAM per node (the container's limit): 24GB."),
    cpus: int | None = typer.Option(None, "--cpus", help="Usable CPUs per node."),
    shm: str | None = typer.Option(None, "--shm", help="/dev/shm size per node: 8GB."),
    disk: str | None = typer.Option(None, "--disk", help="Free disk per node: 500GB."),
    policy: _Policy = typer.Option(_Policy.keep_batch, "--policy", help="keep-batch (accumulate) or scale-lr."),
    lr_scaling: _LrScaling = typer.Option(_LrScaling.sqrt, "--lr-scaling", help="For scale-lr: linear or sqrt."),
    batch_per_gpu: int | None = typer.Option(None, "--batch-per-gpu", min=1, help="Micro-batch per GPU."),
    accum: int | None = typer.Option(None, "--accum", min=1, help="Gradient accumulation steps."),
    effective_batch: int | None = typer.Option(None, "--effective-batch", min=1, help="Target effective batch."),
    compile_: bool | None = typer.Option(None, "--compile/--no-compile", help="torch.compile (default: recipe)."),
    attention: _Attention | None = typer.Option(None, "--attention", help="exact (official) or sdpa."),
    strategy: str | None = typer.Option(None, "--strategy", help="Memory strategy: none, ckpt, shard, ema-cpu or "
                                        "a mix (shard+ckpt); default: the fastest that fits."),
    memory_fraction: float = typer.Option(0.9, "--memory-fraction", min=0.2, max=1.0,
                                          help="Plan to this fraction of GPU memory."),
    max_workers: int | None = typer.Option(None, "--workers", min=0, help="At most this many workers per GPU."),
    data: str | None = typer.Option(None, "--data", help="Dataset root holding train/ (default: recipe)."),
    price_per_hour: float | None = typer.Option(None, "--price-per-hour", min=0.0, help="USD per node-hour "
                                                "(default: the offer's, else the catalog's typical market price)."),
    offer: str | None = typer.Option(None, "--offer", help="A saved offer (JSON): its PCIe, cores, RAM, disk, "
                                     "download and price; its GPUs when --gpus is not given."),
    pcie_gbs: float | None = typer.Option(None, "--pcie-gbs", min=0.01, help="Measured host<->GPU copy, GB/s."),
    pcie_lanes: int | None = typer.Option(None, "--pcie-lanes", min=1, max=16, help="PCIe lanes per GPU (x4: 4)."),
    pcie_gen: int | None = typer.Option(None, "--pcie-gen", min=1, max=6, help="PCIe generation (3, 4, 5)."),
    disk_mbs: float | None = typer.Option(None, "--disk-mbs", min=0.01, help="Disk read bandwidth, MB/s."),
    download_mbps: float | None = typer.Option(None, "--download-mbps", min=0.01, help="Download speed, Mbit/s "
                                               "(staging the dataset counts in time and cost)."),
    epochs: float | None = typer.Option(None, "--epochs", min=0.01, help="Train this many epochs (LR warmup scaled)."),
    hours: float | None = typer.Option(None, "--hours", min=0.01, help="Fit the run into H hours."),
    budget_usd: float | None = typer.Option(None, "--budget-usd", min=0.01, help="Fit the run into D dollars."),
    rdzv_endpoint: str = typer.Option("HEAD_NODE_IP:29400", "--rdzv-endpoint", help="Multi-node: HOST:PORT."),
    out: str | None = typer.Option(None, "--out", help="Write the plan (YAML) here."),
    trace: bool = typer.Option(False, "--trace", help="Trace one training step (needs torch; slow)."),
    calibrated: bool = typer.Option(True, "--calibration/--no-calibration", help="Correct the priors with "
                                    "measured runs (shipped + jitplan calibrate; docs/planning.md)."),
    show: str | None = typer.Option(None, "--show", help="Render a saved plan file instead of planning."),
    list_gpus: bool = typer.Option(False, "--list-gpus", help="List the GPU catalog and exit."),
    json_: JsonFlag = False,
    wide: bool | None = typer.Option(None, "--wide/--compact", help="Side-by-side table with the why in a column "
                                     f"(default: when the terminal has >= {WIDE_COLUMNS} columns)."),
) -> None:
    """Plan batch, LR, EMA, memory, workers and time for a recipe on your GPUs.

    Examples: jitplan plan --gpus 2xRTX3060 --host-ram 24GB | jitplan plan --gpus 8xH100 --out plan.yaml |
    jitplan plan --gpus 2x8xH100 --rdzv-endpoint 10.0.0.1:29400 | jitplan plan --hardware hardware.yaml
    """
    from jitplan.cli._output import emit, note  # lazy: start-up (rich, typer)
    from jitplan.cli.demo import plan_on_cpu, wants_cpu  # lazy: start-up (rich, typer)
    from jitplan.envsettings import env_float, read_env  # lazy: CLI start-up
    from jitplan.errors import UsageError  # lazy: CLI start-up
    from jitplan.planner.plan import make_plan  # lazy: CLI start-up
    from jitplan.schemas import PlanOptions, load_plan, load_recipe, save_plan  # lazy: CLI start-up

    if list_gpus:
        from jitplan.hardware.catalog import catalog  # lazy: CLI start-up

        rows = catalog()
        emit(rows, json_mode=json_, render=lambda console: render_catalog(console, rows, wide=wide))
        return
    if show is not None:
        from jitplan.cli.plan_inference import show_inference  # lazy: start-up (rich, typer)

        if show_inference(show, json_, wide):
            return
        saved = load_plan(show)
        emit(saved, json_mode=json_, render=lambda console: render_plan(console, saved, wide=wide, saved_to=show))
        return
    env = read_env(os.environ)  # JITPLAN_* fill what neither a flag nor the hardware file gives
    from jitplan.cli.plan_inputs import (  # lazy: start-up (rich, typer)
        count_dataset,
        offer_gpus,
        read_offer,
        with_figures,
    )

    offer_fields = read_offer(offer) if offer is not None else None
    if gpus is None and hardware is None and offer_fields is not None:
        gpus = offer_gpus(offer_fields)
    if gpus is None and hardware is None:
        gpus = _text(env.take("gpus", None))
        if gpus is None:
            hardware = _text(env.take("hardware", None))
    if (gpus is None) == (hardware is None):
        raise UsageError("give exactly one of --gpus (e.g. 2xRTX3060) or --hardware FILE"
                         " (or JITPLAN_GPUS / JITPLAN_HARDWARE)")
    from jitmodel.custom import ModelSpecError, looks_like_spec, parse_kwargs  # lazy: CLI start-up

    factory = recipe if recipe and looks_like_spec(recipe) else None
    try:
        model_kwargs = parse_kwargs(model_arg)
    except ModelSpecError as e:
        raise UsageError(str(e)) from None
    if model_kwargs and factory is None:
        raise UsageError("--model-arg goes with --model FILE.py:factory (a recipe sets its own arguments)")
    if task == _Task.train and wants_cpu(gpus, hardware):  # no GPU: the laptop plan (cli/demo.py)
        from jitplan.planner.family import is_family  # lazy: CLI start-up

        if recipe and factory is None and is_family(recipe):
            raise UsageError(f"--recipe {recipe}: a published DiT/SiT/U-ViT recipe is planned for GPUs "
                             "(--gpus 1xRTX4090); on the CPU give --model FILE.py:factory sized for the digits")
        return plan_on_cpu(gpus, hardware, data=data, out=out, json_out=json_, host_ram=host_ram, cpus=cpus,
                           model=factory, model_kwargs=model_kwargs)
    hw = _hardware(gpus, hardware, gpu_mem, gpu_tflops, gpu_bw, host_ram, cpus, shm, disk)
    hw = _host_from_env(hw, env)
    hw, offer_price = with_figures(hw, offer_fields, pcie_gbs=pcie_gbs, pcie_lanes=pcie_lanes, pcie_gen=pcie_gen,
                                   disk_mbs=disk_mbs, download_mbps=download_mbps)
    from jitplan.cli.plan_model import (  # lazy: CLI start-up (a model factory or a DiT/SiT/U-ViT recipe)
        plan_model,
        wants_model,
    )

    if task == _Task.train and wants_model(recipe):
        return plan_model(str(recipe), hw, json_=json_, strategy=strategy, batch_per_gpu=batch_per_gpu,
                          model_kwargs=model_kwargs, data=data,
                          effective_batch=effective_batch, memory_fraction=memory_fraction, out=out,
                          jit_only={"--policy": policy != _Policy.keep_batch, "--compile": compile_, "--trace": trace,
                                    "--attention": attention, "--epochs": epochs, "--hours": hours,
                                    "--budget-usd": budget_usd, "--accum": accum})
    rec = load_recipe(_text(env.take("recipe", recipe)) or "JiT-B/16")
    if task != _Task.train:
        train_only = {"--trace": trace, "--strategy": strategy, "--accum": accum, "--effective-batch": effective_batch,
                      "--compile": compile_, "--data": data, "--workers": max_workers,
                      "--policy": policy != _Policy.keep_batch}
        given = [flag for flag, value in train_only.items() if value not in (None, False)]
        if given:
            raise UsageError(f"{', '.join(given)} plan(s) training; --task {task.value} takes --num-images, --steps, "
                             "--sampler, --batch-per-gpu, --attention, --memory-fraction")
        from jitplan.cli.plan_inference import plan_inference  # lazy: start-up (rich, typer)

        price = env_float("price_per_hour", env.take("price_per_hour", price_per_hour))
        plan_inference(hw, rec, task.value, num_images, steps, sampler, batch_per_gpu, attention, memory_fraction,
                       price, out, json_, wide)
        return
    if hw.gpu is not None and hw.gpu.backend == "mps":
        from jitplan.errors import CheckFailed  # lazy: CLI start-up

        raise CheckFailed(f"{hw.gpu.name} (MPS) has no training plan: jitplan models training on CUDA GPUs (NCCL, "
                          "tensor cores); jitmodel train --device mps runs one unplanned fp32 process",
                          hint=f"plan sampling or evaluation on it: jitplan plan --gpus {gpus or '1xM4'} --task sample "
                          "(or --task evaluate); plan training for a CUDA card: --gpus 1xRTX4090")
    price_per_hour = env_float("price_per_hour", env.take("price_per_hour", price_per_hour))
    if price_per_hour is None and offer_price is not None:
        price_per_hour = offer_price / hw.nodes
    counted = count_dataset(data) if data is not None else None
    opts = PlanOptions(
        policy=policy.value, lr_scaling=lr_scaling.value, batch_per_gpu=batch_per_gpu, accum=accum,
        effective_batch=effective_batch, compile=compile_, attention=attention.value if attention else None,
        memory_fraction=memory_fraction, max_workers=max_workers, data_path=data, price_per_hour=price_per_hour,
        rdzv_endpoint=rdzv_endpoint, config_path=out or "plan.yaml", strategy=strategy,
        epochs=epochs, hours=hours, budget_usd=budget_usd,
        num_images=counted[0] if counted else None, num_classes=counted[1] if counted else None,
        dataset_note=counted[2] if counted else None,
    )
    from jitplan.calibration.records import all_records  # lazy: CLI start-up

    plan = make_plan(hw, rec, opts, calibration=all_records() if calibrated else ())
    if env.names:
        plan = plan.model_copy(update={"provenance": {**plan.provenance, **env.provenance(plan.provenance)}})
    if trace:
        from jitplan.planner.trace import apply_trace  # lazy: CLI start-up

        note("tracing one training step under FakeTensorMode (CPU, no allocation)...")
        plan = apply_trace(plan)
    if out:
        save_plan(plan, out)
        note(f"plan written to {out}")
    emit(plan, json_mode=json_, render=lambda console: render_plan(console, plan, wide=wide, saved_to=out))


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _host_from_env(hw, env):
    """Host fields that neither a flag nor the hardware file set, from JITPLAN_HOST_RAM/CPUS/SHM/DISK."""
    from jitplan.envsettings import ENV_VARS, env_int  # lazy: CLI start-up
    from jitplan.hardware.schema import HostSpec  # lazy: CLI start-up
    from jitplan.hardware.spec import parse_bytes  # lazy: CLI start-up

    host = hw.host.model_dump()
    for key, option in (("ram_bytes", "host_ram"), ("shm_bytes", "shm"), ("disk_free_bytes", "disk")):
        text = env.take(option, host[key])
        if isinstance(text, str):
            host[key] = parse_bytes(text, ENV_VARS[option])
    host["cpus"] = env_int("cpus", env.take("cpus", host["cpus"]))
    return hw.model_copy(update={"host": HostSpec(**host)})


def _hardware(gpus, hardware, gpu_mem, gpu_tflops, gpu_bw, host_ram, cpus, shm, disk):
    from jitplan.errors import UsageError  # lazy: CLI start-up
    from jitplan.hardware.schema import HostSpec  # lazy: CLI start-up
    from jitplan.hardware.spec import hardware_from_flags, load_hardware, parse_bytes  # lazy: CLI start-up

    if gpus is not None:
        return hardware_from_flags(gpus, gpu_mem=gpu_mem, gpu_tflops=gpu_tflops, gpu_bw=gpu_bw, host_ram=host_ram,
                                   cpus=cpus, shm=shm, disk=disk)
    hw = load_hardware(hardware)
    if hw.gpu is None or hw.gpus_per_node < 1:
        raise UsageError(f"{hardware} describes a machine with no NVIDIA GPU, so there is nothing to plan for",
                         hint="plan for the GPUs you will train on: jitplan plan --gpus 2xRTX3060 --host-ram 24GB "
                         "(or run `jitplan probe --out hardware.yaml` on the GPU machine); `jitplan demo` trains "
                         "the tiny model here on the CPU; on a Mac: jitplan plan --gpus 1xM4-24GB --task sample")
    host = hw.host.model_dump()
    for key, flag, value in (("ram_bytes", "--host-ram", host_ram), ("shm_bytes", "--shm", shm),
                             ("disk_free_bytes", "--disk", disk)):
        if value is not None:
            host[key] = parse_bytes(value, flag)
    if cpus is not None:
        host["cpus"] = cpus
    return hw.model_copy(update={"host": HostSpec(**host)})


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_command)
