"""Digits learning check, per class: does an independent classifier recognise each class-conditional sample?

Loads the checkpoint of ``benchmarks/digits_learning.py`` (JiT-Tiny/4 trained on scikit-learn's 8x8
digits; trains one first when ``--ckpt`` is missing) the way ``jitmodel sample`` does (the model built
from the checkpoint, EMA weights), samples ``--per-class`` digits of every class with the fast sampler,
and asks a classifier trained only on the real 8x8 scans (logistic regression, or an SVC) which digit each
sample shows. Prints the accuracy per class and the confusion matrix, then FID/IS of the samples against
the real digits with the digits feature extractor (``jitmodel.fid.DigitsExtractor``): FID end to end on a
tiny run.

    python benchmarks/digits_classify.py --ckpt runs/digits-learning/last.pt
    python benchmarks/digits_classify.py --ckpt last.pt --cfg 1.0 2.0 --per-class 30 --classifier svc
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def real_digit_classifier(kind: str = "logreg", seed: int = 0):
    """Trained on 75 % of the real 8x8 scans; returns (classifier, accuracy on the held-out 25 %)."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.svm import SVC

    d = load_digits()
    xtr, xte, ytr, yte = train_test_split(d.data, d.target, test_size=0.25, random_state=seed, stratify=d.target)
    clf = SVC(gamma=0.001, C=10.0) if kind == "svc" else LogisticRegression(max_iter=2000, C=0.5)
    clf.fit(xtr, ytr)
    return clf, float(clf.score(xte, yte))


def to_scan(images_uint8) -> np.ndarray:
    """uint8 (N, C, S, S) samples -> (N, 64) in 0..16, the format of the real scans (box downsample)."""
    from jitmodel.fid import DigitsExtractor

    return DigitsExtractor.to_digits(images_uint8)


def run(ckpt: Path, *, cfgs: list[float], per_class: int, steps: int, ema: str, classifier: str,
        seed: int) -> dict:
    import torch

    from jitmodel.config import SampleConfig
    from jitmodel.evaluate import EvalJob, evaluate
    from jitmodel.fid import get_extractor, save_stats
    from jitmodel.sample import load_for_sampling, noise_for_ids, sample, to_uint8

    m = load_for_sampling(ckpt, ema=ema)
    mc, diff = m.model_cfg, m.diffusion
    clf, held_out = real_digit_classifier(classifier)
    labels = torch.arange(mc.num_classes).repeat_interleave(per_class)
    z = noise_for_ids(list(range(len(labels))), seed, (mc.in_channels, mc.img_size, mc.img_size), diff.noise_scale)
    out: dict = {"checkpoint": str(ckpt), "model": f"{mc.variant} at {mc.img_size}px", "ema": ema,
                 "classifier": classifier, "classifier_heldout_acc": held_out, "per_class": per_class, "runs": []}
    ext = get_extractor("digits")
    from sklearn.datasets import load_digits

    real = load_digits()
    real_feats = ext(torch.from_numpy((real.images * 255 / 16).astype(np.uint8))[:, None].expand(-1, 3, -1, -1))[0]
    with tempfile.TemporaryDirectory() as tmp:
        ref = save_stats(Path(tmp) / "ref.npz", real_feats.mean(0), np.cov(real_feats, rowvar=False),
                         len(real_feats), ext.name)
        for w in cfgs:
            scfg = SampleConfig(steps=steps, cfg=w, interval_min=0.1 if w != 1 else 0.0, interval_max=1.0, mode="fast")
            t0 = time.perf_counter()
            with torch.no_grad():
                imgs, stats = sample(m.x_hat, z, labels, scfg, num_classes=mc.num_classes, t_eps=diff.t_eps)
            secs = time.perf_counter() - t0
            pred = clf.predict(to_scan(to_uint8(imgs)))
            truth = labels.numpy()
            per = [float((pred[truth == c] == c).mean()) for c in range(mc.num_classes)]
            conf = np.zeros((mc.num_classes, mc.num_classes), dtype=int)
            np.add.at(conf, (truth, pred), 1)
            job = EvalJob(out_dir=Path(tmp) / f"cfg{w:g}", num_images=200, num_classes=mc.num_classes,
                          img_size=mc.img_size, sample=scfg, in_channels=mc.in_channels, seed=seed + 1,
                          noise_scale=diff.noise_scale, t_eps=diff.t_eps, batch=100)
            rep = evaluate(m.x_hat, job, extractor=ext, ref_stats=ref, progress=False)
            out["runs"].append({"cfg": w, "interval": [scfg.interval_min, scfg.interval_max], "steps": steps,
                                "forwards_per_image": stats.forwards, "sample_seconds": secs,
                                "accuracy": float((pred == truth).mean()), "per_class": per,
                                "confusion": conf.tolist(), "digits_fid_200": rep.fid,
                                "digits_is_200": rep.inception_score})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", type=Path, default=Path("runs/digits-learning/last.pt"))
    p.add_argument("--cfg", type=float, nargs="+", default=[1.0, 2.0])
    p.add_argument("--per-class", type=int, default=30)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--ema", default="ema1")
    p.add_argument("--classifier", choices=["logreg", "svc"], default="logreg")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--train-steps", type=int, default=1500, help="when --ckpt is missing: train this long first")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if not a.ckpt.is_file():
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        from digits_learning import train_digits

        a.ckpt = train_digits(a.ckpt.parent, steps=a.train_steps)
    res = run(a.ckpt, cfgs=a.cfg, per_class=a.per_class, steps=a.steps, ema=a.ema, classifier=a.classifier,
              seed=a.seed)
    if a.json:
        print(json.dumps(res))
        return
    print(f"{res['model']} ({res['checkpoint']}), {res['ema']}; classifier {res['classifier']} "
          f"held-out accuracy on real scans {res['classifier_heldout_acc']:.3f}; chance 0.100")
    for r in res["runs"]:
        print(f"\ncfg {r['cfg']:g} (interval {r['interval'][0]:g}-{r['interval'][1]:g}), Heun-{r['steps']}, "
              f"{r['forwards_per_image']:g} forwards/image, {res['per_class']} samples per class, "
              f"{r['sample_seconds']:.1f} s: accuracy {r['accuracy']:.3f}; "
              f"digits-FID(200) {r['digits_fid_200']:.3f}, digits-IS {r['digits_is_200']:.2f}")
        print("  class    " + " ".join(f"{c:>5}" for c in range(len(r["per_class"]))))
        print("  accuracy " + " ".join(f"{v:>5.2f}" for v in r["per_class"]))
        print("  confusion (rows: asked for, columns: recognised as)")
        for c, row in enumerate(r["confusion"]):
            print(f"    {c}: " + " ".join(f"{v:>3}" for v in row))


if __name__ == "__main__":
    main()
