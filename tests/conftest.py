"""Shared fixtures. ``cli`` runs the jitplan CLI in-process with the real error map."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

SCRUBBED_PREFIXES = ("JITPLAN_", "VAST_")  # settings a developer's shell may hold; tests set what they need
KEPT = {"JITPLAN_REGEN_GOLDEN"}  # switches for the test run itself, not settings of the code under test
TERMINAL_COLUMNS = "120"

# Slow tests of the two files no one but their author edits (test_fuzz.py, test_architecture_doc.py): marked
# here instead of with @pytest.mark.slow beside them. Each took 7-22 s on a busy 2-core box; the README's
# test command deselects them (-m "not slow") and .ci/run runs them after it.
SLOW_ELSEWHERE = {
    "tests/test_fuzz.py": {"test_sigterm_while_the_trainer_starts_ends_cleanly", "test_hostile_config_jitmodel_train",
                           "test_hostile_config_jitplan", "test_hypothesis_configs_validate_or_fail_in_one_line",
                           "test_billion_laughs_in_a_fresh_process_under_a_memory_limit",
                           "test_sample_on_a_folder_in_a_fresh_process", "test_hostile_yaml_plan_inputs"},
    "tests/test_architecture_doc.py": {"test_every_cited_dotted_name_resolves"},
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        names = SLOW_ELSEWHERE.get(item.nodeid.split("::")[0], ())
        if getattr(item, "originalname", item.name) in names:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def _isolated_dirs(tmp_path_factory):
    return tmp_path_factory.mktemp("jitplan-home"), tmp_path_factory.mktemp("jitplan-cache")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch, _isolated_dirs):
    """Every test starts from the same environment: no JITPLAN_*/VAST_* variable from the caller's shell (an
    exported VAST_API_KEY or JITPLAN_GPUS would change plans, offers and hints), the registry and caches in
    this session's temporary folders (never the user's), and a fixed terminal width so rich wraps alike."""
    for name in list(os.environ):
        if name.startswith(SCRUBBED_PREFIXES) and name not in KEPT:
            monkeypatch.delenv(name)
    home, cache = _isolated_dirs
    monkeypatch.setenv("JITPLAN_HOME", str(home))
    monkeypatch.setenv("JITPLAN_CACHE_DIR", str(cache))
    monkeypatch.setenv("COLUMNS", TERMINAL_COLUMNS)
    monkeypatch.delenv("LINES", raising=False)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    from jitplan.cli import run

    def _run(*argv: str) -> CliResult:
        capsys.readouterr()
        code = run(list(argv))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return _run


@pytest.fixture
def remote(tmp_path):
    """A real sshd on loopback with a client key and known_hosts; its 'remote' disk is a folder here
    (tests/fakes/sshd.py ``Remote``: the pull, recover and cloud-gap tests)."""
    from fakes.sshd import Remote

    r = Remote(tmp_path)
    yield r
    r.sshd.__exit__()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module: tiny models run faster on one thread, the box is shared,
    and bitwise comparisons need the same thread count in every run. Use it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def plan_for_tiny_recipe(train: dict, gpus: str = "1xRTX3060", *, nodes: int = 1, host_ram: str = "24GB",
                         **options):
    """A plan the planner made for a tiny recipe (``train``, e.g. JiT-Tiny/4 on the digits on the CPU) whose
    reference hardware is ``gpus``: launch tests run the planner's own train section, workers and
    estimates, never a plan with its train section swapped out afterwards."""
    from jitmodel.config import TrainConfig
    from jitplan.hardware.spec import hardware_from_flags
    from jitplan.planner.plan import make_plan
    from jitplan.schemas import PlanOptions, load_recipe

    hw = hardware_from_flags(gpus, host_ram=host_ram)
    if nodes > 1:
        hw = hw.model_copy(update={"nodes": nodes})
    ref = hardware_from_flags(gpus)
    recipe = load_recipe("JiT-B/16").model_copy(update={
        "name": "tiny", "slug": "tiny", "hardware": ref, "train": TrainConfig.model_validate(train)})
    return make_plan(hw, recipe, PlanOptions(**options))
