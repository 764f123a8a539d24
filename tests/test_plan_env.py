"""JITPLAN_* environment settings: below flags and hardware files, above defaults, named in provenance."""

from __future__ import annotations

import json

import yaml

from jitplan.envsettings import read_env


def plan_json(cli, *argv):
    r = cli("plan", *argv, "--json")
    assert r.code == 0, r.err
    return json.loads(r.out)


def test_env_fills_what_no_flag_gives_and_is_named(cli, monkeypatch):
    monkeypatch.setenv("JITPLAN_GPUS", "2xRTX3060")
    monkeypatch.setenv("JITPLAN_HOST_RAM", "24GB")
    monkeypatch.setenv("JITPLAN_CPUS", "16")
    p = plan_json(cli)
    assert p["hardware"]["gpus_per_node"] == 2 and p["hardware"]["gpu"]["name"] == "RTX 3060 12GB"
    assert p["hardware"]["host"]["ram_bytes"] == 24_000_000_000 and p["hardware"]["host"]["cpus"] == 16
    assert p["provenance"]["host.ram_bytes"] == "env JITPLAN_HOST_RAM=24GB"
    assert p["provenance"]["host.cpus"] == "env JITPLAN_CPUS=16"
    assert p["provenance"]["gpu"].startswith("env JITPLAN_GPUS=2xRTX3060 -> catalog: RTX 3060 12GB")


def test_same_plan_from_env_as_from_flags(cli, monkeypatch):
    flags = plan_json(cli, "--gpus", "2xRTX3060", "--host-ram", "24GB", "--cpus", "16")
    monkeypatch.setenv("JITPLAN_GPUS", "2xRTX3060")
    monkeypatch.setenv("JITPLAN_HOST_RAM", "24GB")
    monkeypatch.setenv("JITPLAN_CPUS", "16")
    env = plan_json(cli)
    for key in ("train", "workers", "estimates", "hardware"):
        assert env[key] == flags[key], key


def test_flag_beats_env(cli, monkeypatch):
    monkeypatch.setenv("JITPLAN_HOST_RAM", "64GB")
    monkeypatch.setenv("JITPLAN_GPUS", "8xH100")
    p = plan_json(cli, "--gpus", "2xRTX3060", "--host-ram", "24GB")
    assert p["hardware"]["gpu"]["name"] == "RTX 3060 12GB"
    assert p["hardware"]["host"]["ram_bytes"] == 24_000_000_000
    assert "env" not in p["provenance"]["host.ram_bytes"] and "env" not in p["provenance"]["gpu"]


def test_hardware_file_beats_env_which_fills_its_gaps(cli, monkeypatch, tmp_path):
    hw = plan_json(cli, "--gpus", "2xRTX3060", "--host-ram", "24GB")["hardware"]
    hw["host"]["cpus"] = None
    f = tmp_path / "hardware.yaml"
    f.write_text(yaml.safe_dump(hw))
    monkeypatch.setenv("JITPLAN_HOST_RAM", "64GB")  # the file says 24GB: the file wins
    monkeypatch.setenv("JITPLAN_CPUS", "6")  # the file has no CPU count: the environment fills it
    p = plan_json(cli, "--hardware", str(f))
    assert p["hardware"]["host"]["ram_bytes"] == 24_000_000_000 and p["hardware"]["host"]["cpus"] == 6
    assert p["provenance"]["host.cpus"] == "env JITPLAN_CPUS=6"
    assert "env" not in p["provenance"]["host.ram_bytes"]


def test_recipe_and_price_from_env(cli, monkeypatch):
    monkeypatch.setenv("JITPLAN_RECIPE", "JiT-L/16")
    monkeypatch.setenv("JITPLAN_PRICE_PER_HOUR", "0.8")
    p = plan_json(cli, "--gpus", "2xRTX4090")
    assert p["recipe"].lower().startswith("jit-l")
    assert p["estimates"]["cost_usd"] > 0
    assert p["provenance"]["price_per_hour"] == "env JITPLAN_PRICE_PER_HOUR=0.8"


def test_malformed_env_is_one_line_exit_2(cli, monkeypatch):
    for var, value, said in (("JITPLAN_CPUS", "many", "JITPLAN_CPUS: 'many' is not an integer"),
                             ("JITPLAN_HOST_RAM", "lots", "JITPLAN_HOST_RAM: cannot read 'lots' as a size"),
                             ("JITPLAN_PRICE_PER_HOUR", "-1", "JITPLAN_PRICE_PER_HOUR: '-1' must not be negative")):
        monkeypatch.setenv(var, value)
        r = cli("plan", "--gpus", "2xRTX3060")
        monkeypatch.delenv(var)
        assert r.code == 2 and r.err.startswith(f"Error: {said}") and "Traceback" not in r.err


def test_read_env_ignores_blank_and_foreign_variables():
    s = read_env({"JITPLAN_CPUS": "  ", "JITPLAN_SHM": "8GB", "PATH": "/bin"})
    assert s.values == {"shm": "8GB"} and s.names == set()


def test_module_docstring_example_runs():
    import doctest

    import jitplan.envsettings as m

    res = doctest.testmod(m)
    assert res.attempted > 0 and res.failed == 0
