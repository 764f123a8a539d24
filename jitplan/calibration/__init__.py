"""Plans that learn from runs: measured records, the local store, run summaries and drift.

    records.py   CalibrationRecord (pydantic), the shipped records (the 2xRTX 3060 story) and the local store
    measured.py  a run's metrics.jsonl -> Measurement (step split, img/s, memory, host RAM)
    drift.py     a plan against what its run measured: the >15% differences, for status, runs and the registry

The pure half (match a record, correct the estimates) is jitplan.planner.calibration.
"""
