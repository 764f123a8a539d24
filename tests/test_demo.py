"""``jitplan demo``: the plan it makes for a machine (pure), and a real tiny run through the CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from jitplan.demo import DEFAULT_STEPS, StepProgress, demo_config, png_to_scan, recognise
from jitplan.hardware.schema import HardwareSpec, HostSpec

GB = 10**9


@pytest.mark.parametrize(("cpus", "ram", "workers"), [(2, 24 * GB, 1), (16, 64 * GB, 2), (1, 8 * GB, 0)])
def test_demo_plans_workers_from_this_machines_cpus(cpus, ram, workers):
    hw = HardwareSpec(gpus_per_node=0, gpu=None, host=HostSpec(cpus=cpus, ram_bytes=ram), source="probe")
    cfg, reasons = demo_config(hw, steps=DEFAULT_STEPS)
    assert cfg.data.num_workers == workers and any(r.startswith("cpus:") for r in reasons)
    assert (cfg.model.variant, cfg.model.img_size, cfg.data.kind) == ("JiT-Tiny/4", 16, "digits")
    assert cfg.max_steps == DEFAULT_STEPS and cfg.checkpoint.every_steps == 100
    assert cfg.data.persistent_workers == (workers > 0)
    assert cfg.diffusion.ema_warmup  # short runs: the EMA must not stay an average with the random init
    fixed, _ = demo_config(hw, steps=7)
    assert fixed.max_steps == 7 and fixed.checkpoint.every_steps == 7


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _feed(prog, clock, steps, dt):
    for k in steps:
        clock.t += dt
        prog.write(f"step {k}  epoch 0.1  loss 0.25{k % 10}  lr 0.001  img_per_s 700\n")


def test_progress_reads_step_lines_and_passes_the_rest_through():
    out, clock = io.StringIO(), _Clock()
    prog = StepProgress(200, out, tty=False, clock=clock)
    prog.write("JiT-Tiny/4 at 16px, 1797 images in 10 classes\nstep 1")  # a line split across writes
    prog.write("0  epoch 0.2  loss 0.5  lr 0.001\n")
    assert prog.step == 10 and "JiT-Tiny/4 at 16px" in out.getvalue()
    _feed(prog, clock, range(20, 201, 10), dt=0.5)  # 20 steps/s: as fast as a quiet box, no note
    text = out.getvalue()
    assert prog.step == 200 and prog.rate() == pytest.approx(20.0)
    assert "step 100/200 (50 %), 20.0 steps/s, eta 5s, loss 0.250" in text
    assert "loss 0.25" in text and "note:" not in text
    assert len([x for x in text.splitlines() if x.startswith("step ")]) == 11  # about every 10 %, not every line


def test_progress_says_once_that_a_slow_machine_keeps_going_to_the_target():
    out, clock = io.StringIO(), _Clock()
    prog = StepProgress(1400, out, tty=False, quiet_rate=23.0, clock=clock)
    _feed(prog, clock, range(10, 401, 10), dt=2.0)  # 5 steps/s: a busy box
    notes = [x for x in out.getvalue().splitlines() if x.startswith("note:")]
    assert len(notes) == 1 and "5.0 steps/s" in notes[0] and "keeps going to step 1400" in notes[0]
    assert prog.eta() == pytest.approx(200.0)


@pytest.mark.slow
def test_a_real_scan_reads_back_as_its_digit_and_noise_does_not(tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    pngs, labels = [], []
    for k in range(0, 300, 3):  # 16 px RGB, as the demo's samples are: real scans upscaled 2x
        img = (d.images[k] * 255 / 16).round().astype(np.uint8).repeat(2, 0).repeat(2, 1)
        Image.fromarray(np.stack([img] * 3, -1)).save(tmp_path / f"{k:05d}.png")
        pngs.append(tmp_path / f"{k:05d}.png")
        labels.append(int(d.target[k]))
    assert png_to_scan(pngs[0]) == pytest.approx(d.images[0].reshape(64), abs=0.04)
    ok, pred, held_out = recognise(pngs, labels)
    assert ok >= 95 and held_out > 0.95 and len(pred) == 100
    wrong = [(y + 1) % 10 for y in labels]
    assert recognise(pngs, wrong)[0] <= 5
    with pytest.raises(ValueError, match="labels"):
        recognise(pngs, labels[:-1])


def test_demo_rejects_a_bad_budget_and_an_occupied_folder(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "home"))
    r = cli("demo", "--minutes", "0")
    assert r.code == 2 and "--minutes" in r.err
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.yaml").write_text("x: 1\n")
    r = cli("demo", "--steps", "1", "--out", str(tmp_path / "d"))
    assert r.code == 2 and "already holds a run" in r.err


@pytest.mark.slow
def test_demo_trains_through_the_local_launch_path_and_writes_samples(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("JITPLAN_HOME", str(tmp_path / "home"))
    out = tmp_path / "demo run"
    r = cli("demo", "--steps", "2", "--samples", "1", "--out", str(out), "--json")
    assert r.code == 0, r.err
    res = json.loads(r.out)
    assert res["status"] == "finished" and res["final_step"] == 2 and res["device"] == "CPU"
    png = Path(res["samples"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.parent == out
    assert (out / "out" / "last.pt").is_file() and "step 2" in (out / "train.log").read_text()
    from jitplan.runs.registry import Registry

    run = Registry().get_run(res["run_id"])
    assert (run.name, run.backend, run.status) == ("demo", "local", "finished")


def test_the_grid_is_a_picture_to_keep(tmp_path):
    # issue 23: the demo's grid was a 74 x 182 px postage stamp without row labels
    from PIL import Image

    from jitplan.demo import labelled_grid

    pngs = []
    for k in range(6):
        p = tmp_path / f"{k:05d}.png"
        Image.new("L", (16, 16), 40 * k).save(p)
        pngs.append(p)
    out = labelled_grid(pngs, [0, 0, 1, 1, 2, 2], [0, 3, 1, 1, 2, 0], tmp_path / "grid.png",
                        caption="4 of 6 recognised as their digit")
    with Image.open(out) as im:
        rgb = im.convert("RGB")
        assert im.width >= 2 * 64 + 40 and im.height >= 3 * 64 + 40  # readable: 64 px per sample, 3 rows
        assert rgb.getpixel((40 + 6 + 20, 6 - 2)) == (0x22, 0xaa, 0x22)  # first sample: read as its digit
        assert rgb.getpixel((40 + 6 + 70 + 20, 6 - 2)) == (0xcc, 0x22, 0x22)  # second: not
        label = rgb.crop((0, 6, 40, 6 + 64))  # the row's digit is drawn in its margin
        assert label.convert("L").getextrema()[0] < 100
