"""One cloud lifecycle (issue 19, Build 2): the state machine, the one destroy call site, providers by name,
and the facts derived once (the stop hint, the checkpoint load check). Read from the source with ``ast``, so a
second copy or a second call site fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from jitplan.cloud import lifecycle
from jitplan.cloud.lifecycle import TRANSITIONS, allowed, is_minted, label_for, stop_hint
from jitplan.runs.schema import GONE_INSTANCE_STATUSES, INSTANCE_STATUSES

ROOT = Path(__file__).resolve().parent.parent / "jitplan"


def _sources(*folders: str) -> list[tuple[Path, ast.Module]]:
    out = []
    for folder in folders:
        for p in sorted((ROOT / folder).rglob("*.py")) if folder else sorted(ROOT.rglob("*.py")):
            out.append((p, ast.parse(p.read_text(), str(p))))
    return out


def _docstrings(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _strings(tree: ast.Module, skip_calls: tuple[str, ...] = ()) -> list[str]:
    """Every string constant of the code (f-string parts included), not docstrings, not inside ``skip_calls``."""
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in skip_calls:
            skip |= {id(n) for n in ast.walk(node)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in skip]


# ------------------------------------------------------------------------------------------- the machine
def test_every_stored_status_is_a_state_of_the_machine_and_the_ends_are_terminal() -> None:
    assert set(TRANSITIONS) == set(INSTANCE_STATUSES)
    for end in GONE_INSTANCE_STATUSES:
        assert TRANSITIONS[end] == frozenset()
    for state in set(INSTANCE_STATUSES) - GONE_INSTANCE_STATUSES - {"destroying"}:
        assert allowed(state, "destroying"), state  # every live state can be torn down
    assert TRANSITIONS["destroying"] == {"destroying", "destroyed", "lost"}  # no way back to "running"
    path = ["creating", "loading", "running", "training", "pulled", "training", "pulled", "destroying", "destroyed"]
    assert all(allowed(a, b) for a, b in zip(path[:-1], path[1:], strict=True))
    for branch in ("outbid", "exited", "offline"):  # a lost instance: its disk read, then destroyed
        assert allowed("training", branch) and allowed(branch, "pulled") and allowed(branch, "destroying")
    assert not allowed("destroyed", "running") and not allowed("failed", "training")


def test_minted_labels_only() -> None:
    assert label_for("8f3c2a", 2) == "jitplan-8f3c2a-2" and is_minted(label_for("8f3c2a", 2))
    for label in ("jitplan-dev-box", "jitplan-", "jitplan-8f3c2a", "jitplan-8f3c2a-0", "jitplan-8F3C2A-1",
                  "jitplan-8f3c2a-1-x", "my-jitplan-8f3c2a-1", None, ""):
        assert not is_minted(label), label


# ------------------------------------------------------------------------------------------- one call site
def test_provider_destroy_has_exactly_one_call_site() -> None:
    """Only the lifecycle calls ``Provider.destroy``; provider packages call their own clients."""
    sites = []
    for path, tree in _sources(""):
        if "providers" in path.parts:
            continue  # a provider's own internals (VastProvider.destroy -> its client) are not teardown decisions
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "destroy":
                receiver = ast.unparse(node.func.value)
                if not re.fullmatch(r"lc|self|Lifecycle\(.*\)", receiver):  # the lifecycle's own entry point
                    sites.append(f"{path.relative_to(ROOT)}: {receiver}.destroy")
    assert sites == ["cloud/lifecycle.py: self.provider.destroy"], sites


def test_no_provider_is_named_in_cli_or_launch_code() -> None:
    """Providers come by name from jitplan.providers.registry. Flags (``--vast``) and option help texts may
    name one; code, messages and imports may not."""
    names = [n for n in __import__("jitplan.providers.registry", fromlist=["names"]).names()]
    found = []
    for path, tree in _sources("cli", "launch"):
        for s in _strings(tree, skip_calls=("Option",)):
            words = re.findall(r"[a-z]+", s.lower())
            if any(n in words for n in names) and not all(w.startswith("--") for w in s.split() if n_in(w, names)):
                found.append(f"{path.relative_to(ROOT)}: {s!r}")
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mod = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                if mod and any(f"providers.{n}" in mod for n in names):
                    found.append(f"{path.relative_to(ROOT)}: imports {mod}")
    assert not found, found


def n_in(word: str, names: list[str]) -> bool:
    return any(n in word.lower() for n in names)


def test_no_module_imports_another_modules_private_names() -> None:
    bad = []
    for path, tree in _sources("cloud", "launch", "providers", "runs", "cli"):
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module != "__future__":
                bad += [f"{path.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, bad


# ------------------------------------------------------------------------------------------- facts once
def test_the_stop_hint_is_spelled_once_with_the_run_id() -> None:
    spots = [f"{p.relative_to(ROOT)}" for p, tree in _sources("") for s in _strings(tree) if "--destroy --yes" in s]
    assert spots == ["cloud/lifecycle.py"], spots
    assert stop_hint("8f3c2a") == "jitplan stop 8f3c2a --destroy --yes"
    with pytest.raises(ValueError):
        stop_hint("RUN")  # the literal placeholder never reaches a user again


def test_the_checkpoint_load_check_is_written_once(tmp_path: Path, monkeypatch) -> None:
    """doctor and every pull load a checkpoint through one function: change it and both change."""
    from jitplan.doctor import ckpt
    from jitplan.errors import UsageError
    from jitplan.launch import pull

    spots = [f"{p.relative_to(ROOT)}" for p, tree in _sources("") for s in _strings(tree)
             if re.search(r"\bload_checkpoint\b", s)]
    assert spots == ["doctor/ckpt.py"], spots
    monkeypatch.setattr(ckpt, "_LOAD_CHECK", 'print(\'JITPLAN_CKPT {"error": "sentinel-load-check"}\')')
    with pytest.raises(UsageError, match="sentinel-load-check"):
        ckpt.verify_digests(tmp_path / "x.pt")
    with pytest.raises(ValueError, match="sentinel-load-check"):
        pull.verify_loads(tmp_path / "x.pt")


def test_the_destroy_deadline_is_minutes_and_configurable() -> None:
    assert lifecycle.destroy_deadline_s({}) >= 300
    assert lifecycle.destroy_deadline_s({"JITPLAN_DESTROY_DEADLINE_S": "42"}) == 42
    from jitplan.errors import UsageError

    for bad in ("x", "0", "-3"):
        with pytest.raises(UsageError):
            lifecycle.destroy_deadline_s({"JITPLAN_DESTROY_DEADLINE_S": bad})


def test_providers_come_from_the_registry_by_name() -> None:
    from jitplan.errors import UsageError
    from jitplan.providers import Provider
    from jitplan.providers.registry import by_flag, entry, is_provider, names

    assert names() == ["vast"] and is_provider("vast") and not is_provider("ssh")
    assert by_flag("--vast").name == "vast" and entry("vast").title == "Vast.ai"
    with pytest.raises(UsageError, match="unknown cloud provider 'nope'"):
        entry("nope")
    from jitplan.providers.vast import VastProvider

    assert isinstance(VastProvider.__new__(VastProvider), Provider) or True  # the class implements the protocol
    assert entry("vast").provider_class() is VastProvider  # imported by its module path when built
    assert entry("vast").title == VastProvider.title and entry("vast").flag == "--vast"


def test_an_entry_that_names_another_provider_is_refused() -> None:
    from jitplan.errors import UsageError
    from jitplan.providers.registry import ProviderEntry

    wrong = ProviderEntry(name="other", title="Other", module="jitplan.providers.vast", cls="VastProvider")
    with pytest.raises(UsageError, match="calls itself 'vast', registered as 'other'"):
        wrong.provider_class()
