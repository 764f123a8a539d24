"""Fréchet distance (closed form and scipy), IS, reference-stats npz, feature extractors present or missing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jitmodel.fid import (
    INCEPTION_FILE,
    FeatureExtractorMissing,
    FeatureSums,
    find_inception_weights,
    frechet_distance,
    inception_score,
    load_stats,
    save_stats,
)


# ---------------------------------------------------------------------------------------- the distance
def test_diagonal_covariances_match_the_closed_form():
    """Diagonal S1, S2: tr(S1 + S2 - 2 sqrt(S1 S2)) = sum (sqrt(a_i) - sqrt(b_i))^2."""
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 4, 16), rng.uniform(0.1, 4, 16)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert math.isclose(frechet_distance(mu1, np.diag(a), mu2, np.diag(b)), expected, rel_tol=1e-10)
    assert frechet_distance(mu1, np.diag(a), mu1, np.diag(a)) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.slow
def test_full_covariances_match_scipy_sqrtm():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    for d in (3, 32, 128):
        x, y = rng.normal(size=(4 * d, d)), rng.normal(size=(4 * d, d)) @ rng.normal(size=(d, d)) * 0.3 + 1
        mu1, s1, mu2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
        covmean = scipy_linalg.sqrtm(s1 @ s2).real
        ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
        assert math.isclose(frechet_distance(mu1, s1, mu2, s2), ref, rel_tol=1e-6), d


def test_mismatched_statistics_are_refused():
    with pytest.raises(ValueError, match="do not match"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_feature_sums_equal_numpy_mean_and_cov_and_merge():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(50, 6))
    a, b, whole = FeatureSums(), FeatureSums(), FeatureSums()
    a.add(f[:20])
    b.add(f[20:])
    whole.add(f)
    merged = FeatureSums(n=a.n + b.n, s=a.s + b.s, ss=a.ss + b.ss)  # what the all-reduce does
    for sums in (whole, merged):
        mu, sigma = sums.mu_sigma()
        np.testing.assert_allclose(mu, f.mean(0), atol=1e-12)
        np.testing.assert_allclose(sigma, np.cov(f, rowvar=False), atol=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        FeatureSums().mu_sigma()


# ---------------------------------------------------------------------------------------- inception score
def test_inception_score_extremes():
    k = 10
    confident_diverse = np.eye(k)[np.arange(100) % k] * 50  # sharp and uniform over classes: IS -> k
    assert inception_score(confident_diverse, splits=1)[0] == pytest.approx(k, rel=1e-6)
    collapsed = np.tile(np.eye(k)[0] * 50, (100, 1))  # one class only: IS -> 1
    assert inception_score(collapsed, splits=1)[0] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_split_sums_reproduce_torch_fidelitys_shuffled_splits():
    """ISSums (mergeable across ranks) equals torch-fidelity's formula: seeded shuffle, 10 equal chunks."""
    from jitmodel.inception_sums import ISSums, split_of_ids

    rng = np.random.default_rng(3)
    n, k = 103, 7
    logits = rng.normal(size=(n, k)) * 3
    # torch-fidelity's algorithm, written out: permute with RandomState(2020), chunk i*N//10 .. (i+1)*N//10
    perm = np.random.RandomState(2020).permutation(n)
    p = np.exp(logits[perm] - logits.max(1, keepdims=True)[perm])
    p /= p.sum(1, keepdims=True)
    scores = []
    for i in range(10):
        c = p[i * n // 10:(i + 1) * n // 10]
        scores.append(np.exp((c * (np.log(c) - np.log(c.mean(0, keepdims=True)))).sum(1).mean()))
    split = split_of_ids(n)
    left, right = ISSums(10), ISSums(10)
    ids = np.arange(n)
    left.add(split[ids[ids % 2 == 0]], logits[ids % 2 == 0])  # "rank 0"
    right.add(split[ids[ids % 2 == 1]], logits[ids % 2 == 1])  # "rank 1"
    left.n, left.p, left.plogp = left.n + right.n, left.p + right.p, left.plogp + right.plogp
    mean, std = left.score()
    assert mean == pytest.approx(np.mean(scores), rel=1e-10) and std == pytest.approx(np.std(scores), rel=1e-8)


# ---------------------------------------------------------------------------------------- stats files
def test_stats_roundtrip_and_official_layout(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3) * 2
    save_stats(tmp_path / "s.npz", mu, sigma, 10, "digits")
    m2, s2, ext = load_stats(tmp_path / "s.npz")
    np.testing.assert_array_equal(m2, mu)
    np.testing.assert_array_equal(s2, sigma)
    assert ext == "digits"
    np.savez(tmp_path / "official.npz", mu=mu, sigma=sigma)  # jit_in256_stats.npz holds only mu and sigma
    assert load_stats(tmp_path / "official.npz")[2] is None
    np.savez(tmp_path / "bad.npz", m=mu)
    with pytest.raises(ValueError, match="no mu/sigma"):
        load_stats(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable npz"):
        load_stats(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="not found"):
        load_stats(tmp_path / "none.npz")


# ---------------------------------------------------------------------------------------- extractors
def test_missing_inception_weights_name_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.delenv("JITMODEL_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FeatureExtractorMissing) as e:
        find_inception_weights()
    msg = str(e.value)
    assert INCEPTION_FILE in msg and str(tmp_path / "hub" / "checkpoints" / INCEPTION_FILE) in msg
    assert "--inception-weights" in msg and "\n" not in msg


def test_fid_stats_cli_without_weights_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    torch = pytest.importorskip("torch")
    from jitmodel.cli import run

    monkeypatch.delenv("JITMODEL_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    (tmp_path / "imgs").mkdir()
    code = run(["fid-stats", str(tmp_path / "imgs"), "--out", str(tmp_path / "s.npz"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and INCEPTION_FILE in err and err.count("\n") == 1


def _write_digit_pngs(folder, n=60):
    from PIL import Image
    from sklearn.datasets import load_digits

    folder.mkdir(parents=True, exist_ok=True)
    d = load_digits()
    for i in range(n):
        im = (d.images[i] * 255 / 16).astype(np.uint8)
        Image.fromarray(im).resize((32, 32), Image.BICUBIC).convert("RGB").save(folder / f"{i:05d}.png")
    return folder


@pytest.mark.slow
def test_torch_fidelity_inception_loads_from_a_local_file_without_torchvision(tmp_path):
    """The real extractor class with a locally written weights file (random values, the real layout)."""
    torch = pytest.importorskip("torch")
    import importlib.util

    if importlib.util.find_spec("torch_fidelity") is None:
        pytest.skip("torch-fidelity is not installed (pip install --no-deps torch-fidelity)")
    from unittest import mock

    from jitmodel import fid

    cls = fid._fidelity_inception_class()
    mod = __import__(cls.__module__, fromlist=["x"])

    class _NoLoad(cls):
        def load_state_dict(self, sd, strict=True):  # keep the random init to write it out
            return None

    with mock.patch.object(mod, "load_state_dict_from_url", lambda *a, **k: {}):
        net = _NoLoad("inception-v3-compat", ["2048"])
    weights = tmp_path / INCEPTION_FILE
    torch.save(net.state_dict(), weights)
    ext = fid.get_extractor("inception", "cpu", weights)
    feats, logits = ext(torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8))
    assert feats.shape == (3, 2048) and logits.shape == (3, 1008) and np.isfinite(feats).all()


@pytest.mark.slow
def test_digits_extractor_fid_is_small_for_real_digits_and_large_for_noise(tmp_path):
    pytest.importorskip("sklearn")
    torch = pytest.importorskip("torch")
    from jitmodel.cli import run
    from jitmodel.fid import folder_stats, get_extractor

    real = _write_digit_pngs(tmp_path / "real", 120)
    assert run(["fid-stats", str(real), "--out", str(tmp_path / "ref.npz"), "--features", "digits",
                "--device", "cpu"]) == 0
    mu_r, s_r, ext_name = load_stats(tmp_path / "ref.npz")
    assert ext_name == "digits" and mu_r.shape == (64,)
    ext = get_extractor("digits")
    other = _write_digit_pngs(tmp_path / "other", 60)
    noise = tmp_path / "noise"
    noise.mkdir()
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for i in range(60):
        arr = torch.randint(0, 255, (32, 32, 3), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(arr).save(noise / f"{i:05d}.png")
    fid_real = frechet_distance(*folder_stats(other, ext)[:2], mu_r, s_r)
    fid_noise = frechet_distance(*folder_stats(noise, ext)[:2], mu_r, s_r)
    assert fid_real * 5 < fid_noise, (fid_real, fid_noise)
