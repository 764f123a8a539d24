"""The demo's core: its TrainConfig for this machine, a step-progress display, and an independent judge.

``jitplan demo`` (``jitplan/cli/demo.py``) trains the tiny JiT on scikit-learn's digits to a step target
through the normal local launch path, samples a grid, and asks a classifier that never saw the model (a
scikit-learn SVM trained only on the real 8x8 scans) which digit each sample shows:

    >>> from jitplan.hardware.schema import HardwareSpec, HostSpec
    >>> hw = HardwareSpec(gpus_per_node=0, gpu=None, host=HostSpec(cpus=2, ram_bytes=24 * 10**9), source="probe")
    >>> cfg, _ = demo_config(hw, steps=DEFAULT_STEPS)
    >>> (cfg.model.variant, cfg.max_steps, cfg.diffusion.ema_warmup)
    ('JiT-Tiny/4', 1400, True)

No torch here: training and sampling run in child processes (torchrun, ``jitmodel sample``); the judge
reads the PNGs they write (numpy, Pillow, scikit-learn, imported lazily).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, TextIO

from jitmodel.config import TrainConfig
from jitplan.errors import UsageError
from jitplan.planner.workers import decide_workers

DIGITS_IMAGES = 1797
# 1,418 optimizer steps in 60 s on a quiet 2-core box (benchmarks/RESULTS.md, "Start-up budgets"): the
# default step target is about a minute there, and the rate a busy machine is compared with.
QUIET_STEPS_PER_S = 23.0
DEFAULT_STEPS = 1400
# docs/training.md's digits recipe: JiT-Tiny/4 at 16 px, a high LR and short EMAs with warm-up, so that the
# EMA weights the grid is drawn with are not an average with the random initial weights on a short run.
DEMO_TRAIN: dict[str, Any] = {
    "model": {"variant": "JiT-Tiny/4", "img_size": 16, "num_classes": 10},
    "data": {"kind": "digits", "num_images": DIGITS_IMAGES},
    "optim": {"lr": 1.0e-3, "warmup_epochs": 1},
    "diffusion": {"ema_decays": [0.995, 0.999], "ema_warmup": True},
    "sample": {"steps": 20, "cfg": 2.0, "interval_min": 0.1},
    "batch_per_gpu": 32, "epochs": 1000, "log_every": 10,
}


def demo_config(hardware, *, steps: int | None):
    """The demo's TrainConfig for ``hardware`` (a probed HardwareSpec): workers from its CPUs, RAM, shm."""

    host = hardware.host
    ranks = max(hardware.gpus_per_node, 1) if hardware.gpu is not None else 1
    wp = decide_workers(requested=2, ranks_per_node=ranks, micro_batch=DEMO_TRAIN["batch_per_gpu"], img_size=16,
                        num_images=DIGITS_IMAGES, ram_bytes=host.ram_bytes, cpus=host.cpus, shm_bytes=host.shm_bytes)
    data = {**DEMO_TRAIN["data"], "num_workers": wp.per_rank}  # 0 workers: DataConfig drops prefetching
    # Checkpoint often: a run stopped early (Ctrl-C, a time budget) keeps what it learned.
    every = max(1, min(100, steps or 100))
    cfg = TrainConfig.model_validate({**DEMO_TRAIN, "data": data, "max_steps": steps, "world_size": ranks,
                                      "checkpoint": {"every_steps": every, "keep_last": 2}})
    return cfg, wp.reasons


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def laptop_config(hardware, *, steps: int, data: str | None):
    """The CPU plan (``jitplan plan --gpus cpu``): the demo's recipe on the digits, or on a small class-folder
    dataset (``data``: a folder holding ``train/<class>/*.png``, 32 px). Returns (config, worker reasons,
    what it trains on). A folder without ``train/`` is a UsageError naming the flag and ``data prepare``."""

    cfg, reasons = demo_config(hardware, steps=steps)
    if data is None:
        return cfg, reasons, f"scikit-learn's handwritten digits ({DIGITS_IMAGES:,} images, 10 classes)"
    train = Path(data) / "train"
    if not train.is_dir():
        raise UsageError(f"--data {data}: no train/ folder in it",
                         hint=f"make train/ and val/ from class folders: jitplan data prepare SRC {data}")
    classes = sorted(d for d in train.iterdir() if d.is_dir())
    n = sum(1 for c in classes for f in c.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not classes or n == 0:
        raise UsageError(f"--data {data}: train/ holds no class folders with images",
                         hint="lay it out as train/<class>/<image>.png (jitplan data prepare makes that)")
    raw = cfg.model_dump(mode="json", exclude_unset=True)
    raw["model"] = {**raw["model"], "img_size": 32, "num_classes": len(classes)}
    raw["data"] = {"kind": "imagefolder", "path": str(Path(data).resolve()), "num_images": n,
                   "num_workers": cfg.data.num_workers}
    return TrainConfig.model_validate(raw), reasons, f"{data} ({n:,} images, {len(classes)} classes)"


def with_model(cfg: TrainConfig, spec: str, kwargs: dict[str, Any], *, in_channels: int, input_size: int,
               num_classes: int, data_classes: int) -> TrainConfig:
    """The laptop config with a user's network (``--model FILE.py:factory``) in place of JiT-Tiny: its image size
    and channels are the module's; its classes must be the data's. UsageError (one line) when they are not.

        >>> from jitplan.hardware.schema import HardwareSpec, HostSpec
        >>> hw = HardwareSpec(gpus_per_node=0, gpu=None, host=HostSpec(cpus=2, ram_bytes=24 * 10**9), source="probe")
        >>> cfg, _ = demo_config(hw, steps=DEFAULT_STEPS)
        >>> m = with_model(cfg, "jitmodel.archs.dit:dit", {"depth": 2}, in_channels=1, input_size=16,
        ...                num_classes=10, data_classes=10).model
        >>> m.factory, m.factory_kwargs, m.img_size, m.in_channels
        ('jitmodel.archs.dit:dit', {'depth': 2}, 16, 1)
    """
    if num_classes != data_classes:
        raise UsageError(f"--model {spec}: the module has num_classes {num_classes} but the data has {data_classes} "
                         f"classes", hint=f"build it for {data_classes} (e.g. --model-arg num_classes={data_classes})")
    raw = cfg.model_dump(mode="json", exclude_unset=True)
    raw["model"] = {"factory": spec, "factory_kwargs": kwargs, "img_size": input_size, "in_channels": in_channels,
                    "num_classes": num_classes}
    return TrainConfig.model_validate(raw)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class StepProgress:
    """Stands in for the training log's echo stream: turns ``step N ... loss L`` lines into a progress bar
    with an ETA on a terminal (plain lines every ~10 % otherwise), passes other lines through, and says
    once when this machine is much slower than a quiet 2-core box, so a long wait is not a surprise."""

    _STEP = re.compile(r"^step (\d+)\b(?:.*\bloss (\S+))?")

    def __init__(self, target: int, stream: TextIO, *, tty: bool, quiet_rate: float = QUIET_STEPS_PER_S,
                 clock=time.monotonic):
        self.target, self.stream, self.tty, self.quiet_rate, self.clock = target, stream, tty, quiet_rate, clock
        self.t0 = clock()
        self.step = 0
        self.first: tuple[float, int] | None = None  # (time, step) of the first step line (start-up excluded)
        self.slow_said, self._last_plain, self._buf = False, -1, ""
        self._bar: Any = None  # a rich Progress on a terminal
        self._task: Any = None
        if tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("steps  eta"),
                                 TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                 console=Console(file=stream, highlight=False), transient=False)
            self._task = self._bar.add_task("train", total=target, info="")
            self._bar.start()

    def rate(self) -> float | None:
        """Optimizer steps per second since the first logged step (None before two step lines)."""
        if self.first is None or self.step <= self.first[1]:
            return None
        return (self.step - self.first[1]) / max(self.clock() - self.first[0], 1e-9)

    def eta(self) -> float | None:
        r = self.rate()
        return None if r is None else (self.target - self.step) / r

    def _say(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def _on_step(self, step: int, loss: str | None) -> None:
        self.step = step
        if self.first is None:
            self.first = (self.clock(), step)
        info = f"loss {loss}" if loss else ""
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
        tenth = step * 10 // max(self.target, 1)
        rate, eta = self.rate(), self.eta()
        if self._bar is None and tenth > self._last_plain:
            self._last_plain = tenth
            self._say(f"step {step}/{self.target} ({100 * step // max(self.target, 1)} %)"
                      + (f", {rate:.1f} steps/s, eta {_clock(eta)}" if rate and eta is not None else "")
                      + (f", {info}" if info else ""))
        # Judge the speed after a tenth of the run (or 100 steps), once.
        if not self.slow_said and rate and step - self.first[1] >= min(100, self.target // 10 or 1):
            self.slow_said = True
            if rate < 0.5 * self.quiet_rate:
                total = self.clock() - self.t0 + (eta or 0.0)
                self._say(f"note: this machine trains at {rate:.1f} steps/s (a quiet 2-core box: about "
                          f"{self.quiet_rate:.0f}), so the demo keeps going to step {self.target}, about "
                          f"{_clock(total)} in all; --steps sets a shorter target, Ctrl-C stops and keeps the "
                          f"last checkpoint.")

    def write(self, text: str) -> int:
        self._buf += text
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            m = self._STEP.match(line.strip())
            if m:
                self._on_step(int(m.group(1)), m.group(2))
            elif line.strip():
                self._say(line.rstrip())
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


# -- the judge ------------------------------------------------------------------------------------------

def digit_classifier(seed: int = 0):
    """An SVM trained on 75 % of scikit-learn's real 8x8 scans only; returns (classifier, held-out accuracy)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.svm import SVC

    d = load_digits()
    xtr, xte, ytr, yte = train_test_split(d.data, d.target, test_size=0.25, random_state=seed, stratify=d.target)
    clf = SVC(gamma=0.001, C=10.0).fit(xtr, ytr)
    return clf, float(clf.score(xte, yte))


def png_to_scan(path: str | Path):
    """A sample PNG (any square size divisible by 8, grey or RGB) -> 64 values in 0..16, a real scan's format."""
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255 * 16  # (S, S)
    s = a.shape[0]
    if a.shape != (s, s) or s % 8:
        raise ValueError(f"{path}: expected a square image with a side divisible by 8, got {a.shape}")
    k = s // 8
    return a.reshape(8, k, 8, k).mean(axis=(1, 3)).reshape(64)  # box average down to 8x8


def recognise(pngs: list[Path], labels: list[int]) -> tuple[int, list[int], float]:
    """(how many samples the classifier reads as their own digit, its reading of each, its held-out accuracy)."""
    import numpy as np

    if len(pngs) != len(labels):
        raise ValueError(f"{len(pngs)} images for {len(labels)} labels")
    clf, held_out = digit_classifier()
    pred = [int(p) for p in clf.predict(np.stack([png_to_scan(p) for p in pngs]))]
    return sum(int(p == y) for p, y in zip(pred, labels, strict=True)), pred, held_out


def labelled_grid(pngs: list[Path], labels: list[int], pred: list[int], out: str | Path, *, caption: str,
                  cell: int = 64) -> Path:
    """The samples as a picture to keep: one row per digit, labelled on the left, each sample scaled to
    ``cell`` px (nearest neighbour: the pixels as the model drew them) in a green frame when the judge
    read it as its digit and a red one when not, the score in a caption below. Written atomically."""
    import os
    import tempfile

    from PIL import Image, ImageDraw, ImageFont

    rows: dict[int, list[tuple[Path, bool]]] = {}
    for path, y, p in zip(pngs, labels, pred, strict=True):
        rows.setdefault(y, []).append((path, p == y))
    per_row = max(len(r) for r in rows.values())
    pad, margin, foot = 6, 40, 44
    font = ImageFont.load_default(size=22)
    small = ImageFont.load_default(size=15)
    width = margin + per_row * (cell + pad) + pad
    img = Image.new("RGB", (max(width, 470), pad + len(rows) * (cell + pad) + foot), "white")
    draw = ImageDraw.Draw(img)
    for r, (digit, items) in enumerate(sorted(rows.items())):
        top = pad + r * (cell + pad)
        draw.text((margin // 2, top + cell // 2), str(digit), fill="black", font=font, anchor="mm")
        for c, (path, ok) in enumerate(items):
            left = margin + pad + c * (cell + pad)
            with Image.open(path) as im:
                img.paste(im.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST), (left, top))
            draw.rectangle((left - 2, top - 2, left + cell + 1, top + cell + 1), outline="#2a2" if ok else "#c22",
                           width=2)
    draw.text((pad, img.height - foot + 8), caption, fill="black", font=small)
    draw.text((pad, img.height - foot + 26), "green: read as its digit, red: not (the judge: an SVM on real digits)",
              fill="#555", font=small)
    out = Path(out)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".png")
    os.close(fd)
    img.save(tmp)
    os.replace(tmp, out)
    return out
