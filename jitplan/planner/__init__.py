"""The planner: pure functions from (HardwareSpec, Recipe, PlanOptions) to a Plan. No I/O, no torch.

    memory.py   bytes per GPU: fixed state + activations(b) + overheads (calibrated against trace.py)
    compute.py  FLOPs -> step/epoch/eval time with MFU priors; checkpoint size; cost
    scaling.py  micro-batch x accumulation split; LR / betas / EMA scaling rules
    workers.py  DataLoader workers per rank, capped by CPUs, host RAM and /dev/shm
    rows.py     the side-by-side table rows
    plan.py     make_plan, the launch as data (the command is rendered by launch/torchrun.py)
    trace.py    one real training step under FakeTensorMode + MemTracker (imports torch lazily)

    >>> from jitplan.hardware.spec import hardware_from_flags
    >>> from jitplan.planner.plan import make_plan
    >>> from jitplan.schemas import PlanOptions, load_recipe
    >>> make_plan(hardware_from_flags("8xH200"), load_recipe("JiT-B/16"), PlanOptions()).train.batch_per_gpu
    128
"""
