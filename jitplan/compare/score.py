"""Scoring every arm alike: the common v-loss, sample grids, digits accuracy / FD, FID. Imports torch lazily."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from jitmodel import data as data_mod
from jitmodel import objectives
from jitmodel.checkpoint import load_checkpoint
from jitplan.compare.results import ArmResult
from jitplan.errors import CheckFailed, UsageError

if TYPE_CHECKING:
    from jitmodel.config import TrainConfig


class Scorer:
    """Everything that must be the same for every arm: a fixed batch, noise and t grid; sample noise;
    the digits classifier and the real-digit statistics; the Inception extractor and reference stats."""

    def __init__(self, train: TrainConfig, *, seed: int, ref_stats: str | None = None, n_fixed: int = 256,
                 n_t: int = 16):
        import torch


        self.train, self.seed, self.notes = train, seed, []
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        mc = train.model
        # set by _fixed_batch / _fid_setup when the data / reference statistics are there (torch, numpy: lazy)
        self.x: Any = None
        self.digits: Any = None
        self.ref: Any = None
        self.inception: Any = None
        self.n_fixed = self.n_real = 0
        self.t = torch.empty(0)
        self.num_classes = mc.num_classes
        if ref_stats:  # first: a bad path fails in a second, before any training
            self._fid_setup(ref_stats)
        try:
            ds = data_mod.build_dataset(train.data, mc.img_size, mc.in_channels, mc.num_classes)
        except (ValueError, OSError) as e:  # e.g. the data sits on the SSH host only
            self.notes.append(f"Common v-loss and data metrics skipped: the data is not readable here "
                              f"({' '.join(str(e).split())[:160]}).")
            ds = None
        if ds is not None:
            self._fixed_batch(ds, seed, n_fixed, n_t)

    def _fixed_batch(self, ds: Any, seed: int, n_fixed: int, n_t: int) -> None:
        import numpy as np
        import torch

        train, mc, d = self.train, self.train.model, self.train.diffusion
        g = torch.Generator().manual_seed(seed + 7919)
        idx = torch.randperm(len(ds), generator=g)[: min(n_fixed, len(ds))]
        items = [ds[int(i)] for i in idx]
        self.n_fixed = len(items)
        self.x = torch.stack([im for im, _ in items]).float().div(255).mul(2).sub(1)
        self.y = torch.tensor([lab for _, lab in items])
        self.e = torch.randn(self.x.shape, generator=g) * d.noise_scale
        q = (torch.arange(n_t, dtype=torch.float64) + 0.5) / n_t
        self.t = torch.sigmoid(d.P_mean + d.P_std * torch.special.ndtri(q)).float()
        self.num_classes = min(mc.num_classes, len(ds.classes))
        if train.data.kind == "digits":
            from jitmodel.fid import DigitsExtractor  # lazy: start-up (numpy)

            self.digits = DigitsExtractor(seed=0)
            real = torch.stack([ds[i][0] for i in range(len(ds))])
            feats, _ = self.digits(real)
            self.real_mu, self.real_sigma, self.n_real = feats.mean(0), np.cov(feats, rowvar=False), len(feats)

    def _fid_setup(self, ref_stats: str) -> None:
        from jitmodel.fid import FeatureExtractorMissing, get_extractor, load_stats  # lazy: start-up (numpy)

        try:
            self.ref = load_stats(ref_stats)
        except (OSError, ValueError, KeyError) as e:
            raise UsageError(f"--ref-stats {ref_stats}: {' '.join(str(e).split())[:160]}") from None
        try:
            self.inception = get_extractor(self.ref[2] or "inception", device=str(self.device))
        except FeatureExtractorMissing as e:
            self.notes.append(f"FID skipped: {' '.join(str(e).split())[:200]}")

    def common_v_loss(self, den: Any, prediction: str) -> list[tuple[float, float]]:
        """(t, v-space loss) on the fixed batch for each grid time."""
        import torch


        t_eps = den.diff_cfg.t_eps
        x, e, y = self.x.to(self.device), self.e.to(self.device), self.y.to(self.device)
        rows = []
        with torch.no_grad():
            for t in self.t.tolist():
                tb = torch.full((x.shape[0],), t, device=self.device)
                z = objectives.interpolate(x, e, tb)
                out = den.net(z, tb, y).float()
                loss = objectives.per_sample_loss(out, x, e, z, tb, prediction, "v", t_eps).mean()
                rows.append((round(t, 5), float(loss)))
        return rows

    def classes(self, k: int = 10) -> list[int]:
        """Up to ``k`` class ids spread over the label range (all of them for digits)."""
        n = self.num_classes
        return list(range(n)) if n <= k else sorted({round(i * n / k) for i in range(k)})

    def score(self, res: ArmResult, ckpt: Path, *, weights: str, sample_steps: int, per_class: int,
              grid_path: Path, effective_batch: int) -> None:
        import numpy as np
        import torch

        from jitmodel.fid import frechet_distance  # lazy: start-up (numpy)
        from jitmodel.sample import (  # lazy: start-up (numpy, pynvml, torch)
            load_for_sampling,
            make_grid,
            noise_for_ids,
            sample,
            save_png,
            to_uint8,
        )

        step = int(load_checkpoint(ckpt).get("step") or 0)
        res.steps, res.images = step, step * effective_batch
        try:
            loaded = load_for_sampling(ckpt, ema=weights, device=self.device)
        except ValueError as e:
            raise CheckFailed(f"{res.arm}: cannot load {ckpt}: {e}") from None
        den, d, mc = loaded.denoiser, loaded.diffusion, loaded.model_cfg
        if (d.prediction, d.loss_space) != (res.prediction, res.loss_space):
            raise CheckFailed(f"{ckpt} records prediction {d.prediction}, loss {d.loss_space}; expected {res.arm}")
        if self.x is not None:
            res.v_loss_by_t = self.common_v_loss(den, d.prediction)
            res.v_loss_common = float(np.mean([v for _, v in res.v_loss_by_t]))

        cls = self.classes()
        y = torch.tensor(cls * per_class, device=self.device)  # row r: one sample of every class
        shape = (mc.in_channels, mc.img_size, mc.img_size)
        z = noise_for_ids(list(range(len(y))), self.seed, shape, d.noise_scale, self.device)
        scfg = loaded.sample_defaults.model_copy(update={"steps": sample_steps})
        chunks = []
        with torch.no_grad():
            for k in range(0, len(y), 100):
                img, _ = sample(loaded.x_hat, z[k:k + 100], y[k:k + 100], scfg, num_classes=mc.num_classes,
                                t_eps=d.t_eps)
                chunks.append(to_uint8(img))
        u8 = torch.cat(chunks)
        res.samples = len(u8)
        rows = min(per_class, 10)
        res.grid = str(save_png(grid_path, make_grid(u8[: rows * len(cls)], ncol=len(cls))))
        rgb = u8 if u8.shape[1] == 3 else u8[:, :1].expand(-1, 3, -1, -1)
        if self.digits is not None:
            feats, logits = self.digits(rgb)
            res.accuracy = float((logits.argmax(1) == y.cpu().numpy()).mean())
            if len(feats) > 1:
                res.fd_digits = frechet_distance(feats.mean(0), np.cov(feats, rowvar=False), self.real_mu,
                                                 self.real_sigma)
        if self.inception is not None and self.ref is not None:
            feats = np.concatenate([self.inception(rgb[k:k + 64])[0] for k in range(0, len(rgb), 64)])
            res.fid = frechet_distance(feats.mean(0), np.cov(feats, rowvar=False), self.ref[0], self.ref[1])


