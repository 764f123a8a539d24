"""``jitplan doctor``: checks C1-C14 (docs/doctor.md), each a function ``(DoctorContext) -> Finding``.

Checks are pure over the context (probe report, torch import result, plan facts, dataset report,
checkpoint summary); collecting those facts is the runner's job (``jitplan.doctor.runner``).
"""
