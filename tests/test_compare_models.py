"""``jitplan compare`` of networks (issue 21, Build 5): model arms, crossed with objectives, labels, sizes, refusals,
and one real run of JiT-Tiny against the DiT of its size on the digits."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import yaml

from jitmodel.config import TrainConfig
from jitplan import compare as core
from jitplan.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "jitplan" / "templates" / "compare" / "digits.yaml"
DIT = "jitmodel.archs.dit:dit_digits"


@pytest.fixture(scope="module")
def base() -> TrainConfig:
    return core.load_base(TEMPLATE).train


# ------------------------------------------------------------------------------------------- arms
def test_models_compare_each_with_the_configs_objective(base):
    arms = core.plan_arms(base, None, None, [f"jit,{DIT}"])
    assert [a.name for a in arms] == ["JiT-Tiny/8", "dit_digits"]
    assert [a.slug for a in arms] == ["JiT-Tiny-8", "dit_digits"]
    assert {(a.prediction, a.loss_space) for a in arms} == {("x", "v")}  # the template's (JiT's) objective
    assert arms[0].model == base.model and arms[1].model is not None
    assert arms[1].model.factory == DIT and arms[1].model.source_digest  # the digest of the source trained
    assert (arms[1].model.img_size, arms[1].model.in_channels, arms[1].model.num_classes) == (32, 3, 10)
    # --model repeated is the same as a comma list
    assert core.plan_arms(base, None, None, ["jit", DIT]) == arms


def test_models_cross_objectives_and_explicit_arms_add_to_them(base):
    arms = core.plan_arms(base, ["model=jitmodel.archs.dit:dit_digits,pred=eps,loss=eps,hidden=128"], "x,v",
                          ["jit", DIT])
    assert [a.name for a in arms] == ["JiT-Tiny/8 x:v", "JiT-Tiny/8 v:v", "dit_digits x:v", "dit_digits v:v",
                                      "dit_digits(hidden=128) eps:eps"]
    assert arms[-1].model.factory_kwargs == {"hidden": 128} and arms[-1].slug == "dit_digits-hidden-128-eps-eps"
    # only objectives vary: the names stay the objectives' (and the objectives study is unchanged)
    same_net = core.plan_arms(base, ["model=jit,pred=eps"], None, ["jit"])
    assert [a.name for a in same_net] == ["x:v", "eps:v"]
    assert [a.name for a in core.plan_arms(base, ["x:v", "eps"], None, None)] == ["x:v", "eps:v"]
    # --arm alone: exactly the arms given, no arm of the config's own added
    alone = core.plan_arms(base, ["model=jit", f"model={DIT},pred=v"], None, None)
    assert [a.name for a in alone] == ["JiT-Tiny/8 x:v", "dit_digits v:v"]
    assert [a.name for a in core.plan_arms(base, ["model=jit"], "v", None)] == ["v:v", "x:v"]


def test_a_file_factory_is_made_absolute_and_refused_over_ssh(base, tmp_path, monkeypatch):
    src = ROOT / "examples" / "models" / "my_denoiser.py"
    monkeypatch.chdir(ROOT)
    arms = core.plan_arms(base, None, None, ["jit", "examples/models/my_denoiser.py:make"])
    assert arms[1].model.factory == f"{src}:make"  # absolute: the trainer runs in the arm folder
    assert arms[1].name == "my_denoiser.py:make" and arms[1].slug == "my_denoiser.py-make"
    with pytest.raises(UsageError, match="runs on this machine only") as e:
        core.plan_arms(base, None, None, ["jit", "examples/models/my_denoiser.py:make"], remote=True)
    assert e.value.hint == "e.g. --model examples.models.my_denoiser:FACTORY"


def test_a_config_of_a_factory_is_base_and_has_no_jit(base):
    own = base.model_copy(update={"model": base.model.model_validate(
        {**base.model.model_dump(), "factory": DIT, "factory_kwargs": {}})})
    arms = core.plan_arms(own, None, None, ["base", "JiT-Tiny/8"])
    assert [a.name for a in arms] == ["dit_digits", "JiT-Tiny/8"] and arms[1].model.factory is None
    with pytest.raises(UsageError, match="the config trains jitmodel.archs.dit:dit_digits, not a JiT variant"):
        core.plan_arms(own, None, None, ["jit", "JiT-Tiny/8"])


def test_two_factories_of_one_name_are_told_apart(base, tmp_path):
    files = [tmp_path / d / "mine.py" for d in ("a", "b")]
    for f in files:
        f.parent.mkdir()
        f.write_text("from jitmodel.archs.dit import dit_digits\n")
    arms = core.plan_arms(base, None, None, [DIT, *(f"{f}:dit_digits" for f in files)])
    assert [a.name for a in arms] == ["dit_digits", *(f"{f}:dit_digits" for f in files)]  # not mine.py:dit_digits


@pytest.mark.parametrize("arms,objectives,models,fragment", [
    (None, None, ["jit", "JiT-Tiny/8"], "arm JiT-Tiny/8 x:v is given twice"),  # jit is the config's JiT-Tiny/8
    (None, None, ["jit", "base"], "is given twice"),
    (["model=jit"], None, ["jit"], "is given twice"),
    (None, None, [DIT], "at least two arms, got 1"),
    (None, None, ["jit", "NoSuch/3"], "unknown model 'NoSuch/3'"),
    (None, None, ["jit", "nosuch.module:make"], "module nosuch.module not found"),
    (None, None, ["jit", "missing_file.py:make"], "no such file missing_file.py"),
    (["model=jit,hidden=3"], None, ["jit"], "arguments (hidden) are for a factory, not jit"),
    (["pred=x,hidden=3"], None, ["jit"], "need model=FACTORY"),
    ([f"model={DIT},pred=q"], None, ["jit"], "unknown pred 'q'"),
    ([f"model={DIT},pred"], None, ["jit"], "'pred' is not KEY=VALUE"),
    ([f"model={DIT},model=jit"], None, ["jit"], "model is given twice"),
    ([f"model={DIT},two words=1"], None, ["jit"], "neither model, pred, loss nor a factory argument"),
    (None, "x,q", ["jit", DIT], "unknown prediction 'q'"),
])
def test_bad_model_arms_are_usage_errors(base, arms, objectives, models, fragment):
    with pytest.raises(UsageError) as e:
        core.plan_arms(base, arms, objectives, models)
    assert fragment in e.value.message


def test_each_arm_config_differs_only_in_its_network_and_objective(base):
    arms = core.plan_arms(base, None, "x,eps", ["jit", DIT])
    cfgs = [core.arm_train_config(base, a, core.Budget(steps=50), seed=3, world_size=1) for a in arms]
    assert [c.model.factory for c in cfgs] == [None, None, DIT, DIT]
    assert [c.diffusion.prediction for c in cfgs] == ["x", "eps", "x", "eps"]
    for c in cfgs:  # data, data order (seed), optimizer, batch and budget: the same for every arm
        assert (c.data, c.optim, c.seed, c.max_steps, c.batch_per_gpu) == (base.data, base.optim, 3, 50, 64)
        assert c.sample == base.sample and c.diffusion.ema_decays == base.diffusion.ema_decays


# ------------------------------------------------------------------------------------------- sizes and checks
def test_params_are_counted_on_meta_and_dit_digits_is_jit_tinys_size(base):
    arms = core.with_params(core.plan_arms(base, None, None, ["jit", DIT]), base)
    jit, dit = (a.params for a in arms)
    assert (jit, dit) == (752_864, 760_128)  # JiT-Tiny/8 at 32 px (trainable: its positions are fixed) and the DiT
    assert abs(dit - jit) / jit < 0.10
    small = core.with_params(core.plan_arms(base, [f"model={DIT},patch=4"], None, ["JiT-Tiny/4"]), base)
    assert abs(small[1].params - small[0].params) / small[0].params < 0.10  # patch 4: 732,336 vs 734,288


@pytest.mark.parametrize("model,fragment", [
    (f"model={DIT},input_size=16", "does not take the data: jitmodel.archs.dit:dit_digits builds input_size 16 but "
     "the config says img_size 32"),
    (f"model={DIT},in_channels=1", "builds in_channels 1 but the config says in_channels 3"),
    (f"model={DIT},num_classes=1000", "builds num_classes 1000 but the config says num_classes 10"),
    ("model=jitmodel.archs.dit:nope", "jitmodel.archs.dit has no callable 'nope'"),
    (f"model={DIT},width=3", "the factory raised TypeError"),
])
def test_a_network_that_does_not_build_or_take_the_data_is_refused(base, model, fragment):
    arms = core.plan_arms(base, [model], None, ["jit"])
    with pytest.raises(UsageError) as e:
        core.with_params(arms, base)
    assert fragment in e.value.message and "\n" not in e.value.message


@pytest.mark.parametrize("args,fragment", [
    (["--model", "jit,jitmodel.archs.dit:nope"], "has no callable 'nope'"),
    (["--model", "jit", "--arm", f"model={DIT},input_size=16"], "does not take the data"),
    (["--model", f"jit,{DIT},{DIT}"], "arm dit_digits x:v is given twice"),
    (["--model", "jit,NoSuch/3"], "unknown model 'NoSuch/3'"),
    # checked before a cloud is asked for anything (else: "--vast needs a plan", or an instance rented)
    (["--model", "jit,jitmodel.archs.dit:nope", "--vast", "--yes"], "has no callable 'nope'"),
    (["--model", "jit,examples/models/my_denoiser.py:make", "--ssh", "a@b"], "runs on this machine only"),
])
def test_bad_models_on_the_command_line_are_one_line_and_exit_2(cli, tmp_path, monkeypatch, args, fragment):
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(ROOT)  # the example's FILE.py path is relative to the checkout
    monkeypatch.setattr(core, "run_compare", lambda *a, **k: pytest.fail("the comparison was started"))
    r = cli("compare", str(TEMPLATE), *args, "--steps", "2", "--out", str(tmp_path / "o"))
    assert r.code == 2, (r.out, r.err)
    assert fragment in r.err and "Traceback" not in r.err
    assert len([line for line in r.err.splitlines() if line.startswith("Error:")]) == 1


def test_the_cli_hands_the_model_arms_with_their_sizes_to_the_core(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "home"))
    seen = {}

    def fake_run_compare(base, arms, budget, out, **kw):
        seen.update(arms=arms, budget=budget)
        raise UsageError("stop here")

    monkeypatch.setattr(core, "run_compare", fake_run_compare)
    r = cli("compare", str(TEMPLATE), "--models", f"jit,{DIT}", "--objectives", "x,eps", "--images", "640")
    assert r.code == 2 and "stop here" in r.err
    assert [a.name for a in seen["arms"]] == ["JiT-Tiny/8 x:v", "JiT-Tiny/8 eps:v", "dit_digits x:v",
                                              "dit_digits eps:v"]
    assert [a.params for a in seen["arms"]] == [752_864, 752_864, 760_128, 760_128]
    assert seen["budget"].images == 640


# ------------------------------------------------------------------------------------------- tables
def _result(models: tuple[str, str], objectives: tuple[str, str]) -> core.CompareResult:
    arms = [core.ArmResult(arm=f"{m} {o}", prediction=o[0], loss_space="v", model=m, model_spec=m, params=p,
                           status="finished", run_dir="r", wall_s=1.0, steps=10, accuracy=0.5)
            for m, o, p in zip(models, objectives, (752_864, 760_128), strict=True)]
    return core.CompareResult(variant="JiT-Tiny/8", img_size=32, patch_dim=192, hidden=96, data="digits",
                              budget=core.Budget(steps=10), seed=0, effective_batch=64, backend="local",
                              weights="ema1", sample_steps=5, arms=arms)


def test_the_summary_labels_arms_by_model_with_their_parameters():
    md = core.summary_markdown(_result(("JiT-Tiny/8", "dit_digits"), ("x:v", "x:v")))
    assert md.startswith("# Models compared: ") and "| model | params | status |" in md
    assert "objective x:v, data digits at 32 px" in md
    rows = [line for line in md.splitlines() if line.startswith(("| JiT-Tiny/8", "| dit_digits"))]
    assert len(rows) == 2 and "| 752,864 |" in rows[0] and "| 760,128 |" in rows[1]
    both = core.summary_markdown(_result(("JiT-Tiny/8", "dit_digits"), ("x:v", "v:v")))
    assert both.startswith("# Models and objectives compared: ") and "| model objective | params |" in both
    assert core.summary_markdown(_result(("JiT-Tiny/8", "JiT-Tiny/8"), ("x:v", "v:v"))).startswith(
        "# Objectives compared")


def test_notes_give_the_sizes_side_by_side():
    from types import SimpleNamespace

    r = _result(("JiT-Tiny/8", "dit_digits"), ("x:v", "x:v"))
    bare = SimpleNamespace(x=None, digits=None, ref=None, notes=[])
    notes = " ".join(core._notes(r.arms, bare, core.Budget(steps=10)))
    assert "JiT-Tiny/8 752,864 trainable parameters, dit_digits 760,128 trainable parameters (+1.0%)" in notes
    assert "initial weights differ" in notes
    one = _result(("JiT-Tiny/8", "JiT-Tiny/8"), ("x:v", "v:v"))
    assert "trainable parameters" not in " ".join(core._notes(one.arms, bare, core.Budget(steps=10)))


def test_module_docstring_examples_run():
    import doctest

    import jitplan.compare.arms
    import jitplan.compare.models

    for mod in (jitplan.compare.arms, jitplan.compare.models):
        res = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert res.attempted > 0 and res.failed == 0, mod.__name__


def test_a_module_factory_is_found_without_the_project_on_sys_path(monkeypatch):
    """The editable install finds jitmodel through a meta-path finder, not a sys.path entry: the factory's
    module was 'not found on the Python path' (jitplan plan/compare --model jitmodel.archs.dit:...)."""
    from jitmodel import custom

    monkeypatch.setattr(sys, "path", [p for p in sys.path if not (Path(p or ".") / "jitmodel").is_dir()])
    assert custom.source_file(custom.parse_spec(DIT)) == ROOT / "jitmodel" / "archs" / "dit.py"


# ------------------------------------------------------------------------------------------- a real comparison
@pytest.mark.slow
def test_jit_tiny_against_a_dit_of_its_size_end_to_end(cli, tmp_path, monkeypatch):
    """JiT-Tiny/4 and the DiT of its size (patch 4 at 16 px: 16 tokens each) through the real launch path, the
    same 60 steps of the same digits; both learn, both are scored and drawn, their sizes sit beside the results."""
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("JITMODEL_NO_PROGRESS", "1")
    raw = yaml.safe_load(TEMPLATE.read_text())
    raw["model"].update(variant="JiT-Tiny/4", img_size=16)
    raw["batch_per_gpu"] = 32
    raw["optim"]["warmup_epochs"] = 0.2
    cfg = tmp_path / "digits16.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "cmp"
    r = cli("compare", str(cfg), "--arm", "model=jit", "--arm", f"model={DIT},input_size=16,patch=4", "--steps", "60",
            "--out", str(out), "--sample-steps", "4", "--per-class", "2", "--threads", "1", "--json")
    assert r.code == 0, r.err[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res == json.loads(r.out)
    assert [a["arm"] for a in res["arms"]] == ["JiT-Tiny/4", "dit_digits(input_size=16,patch=4)"]
    assert [a["model_spec"] for a in res["arms"]] == ["JiT-Tiny/4", DIT]
    jit, dit = res["arms"]
    assert abs(dit["params"] - jit["params"]) / jit["params"] < 0.10
    for a in res["arms"]:
        assert a["status"] == "finished" and a["steps"] == 60 and a["images"] == 60 * 32
        losses = [v for _, v in a["loss_curve"]]
        assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
        assert sum(losses[-2:]) < 0.8 * sum(losses[:2]), (a["arm"], losses)  # it learns
        assert math.isfinite(a["v_loss_common"]) and 0.0 <= a["accuracy"] <= 1.0 and math.isfinite(a["fd_digits"])
        assert Path(a["grid"]).is_file() and Path(a["grid"]).parent == out / "grids"
        train = yaml.safe_load((Path(a["run_dir"]) / "train.yaml").read_text())
        assert train["model"].get("factory") == (None if a is jit else DIT) and train["seed"] == 0
    assert jit["v_loss_common"] != dit["v_loss_common"]
    md = (out / "summary.md").read_text()
    assert md.startswith("# Models compared: JiT-Tiny/4, dit_digits(input_size=16,patch=4)")
    assert f"| {jit['params']:,} |" in md and f"| {dit['params']:,} |" in md and (out / "loss.png").is_file()


@pytest.mark.net
@pytest.mark.slow
def test_model_arms_over_ssh_train_there_and_are_scored_here(cli, tmp_path, monkeypatch):
    """A factory network goes over the SSH launch path (loopback sshd, tests/test_ssh.py's) as a module of the
    uploaded project: trained there, its checkpoint fetched and rebuilt here from the recorded factory."""
    from test_compare import compare_over_ssh

    r, root, _ = compare_over_ssh(cli, tmp_path, monkeypatch, "--arm", "model=jit",
                                  "--arm", f"model={DIT},input_size=8,patch=4,num_classes=2")
    assert r.code == 0, r.err[-3000:]
    res = json.loads(r.out)
    assert res["backend"] == "ssh" and [a["arm"] for a in res["arms"]] == [
        "JiT-Tiny/4", "dit_digits(input_size=8,patch=4,num_classes=2)"]
    for a in res["arms"]:
        slug = Path(a["run_dir"]).name
        assert (root / "runs" / f"compare-cmp-{slug}" / "out" / "last.pt").is_file()  # trained there
        assert a["status"] == "finished" and a["steps"] == 2 and math.isfinite(a["v_loss_common"]) and a["grid"]
    assert res["arms"][1]["model_spec"] == DIT and res["arms"][1]["params"] > 0
