"""``jitplan data encode`` (issue 21, Build 3): an image folder encoded once by the SD VAE (randomly initialised
with its real configuration: no weights can be downloaded here) into verified shards; resumable after a real
SIGKILL; a tampered, truncated or missing shard and an incomplete folder refused with one line; bad input exit 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("diffusers")

from jitmodel import autoencoder as ae  # noqa: E402
from jitmodel import latents as lt  # noqa: E402
from jitmodel.config import DataConfig  # noqa: E402
from jitmodel.data import build_dataset  # noqa: E402
from jitplan.dataset.encode import encode_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def make_folder(root: Path, per_class: int = 3, classes=("cat", "dog"), size=(40, 36)) -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        d = root / "train" / c
        d.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """6 images, 2 classes, 32 px -> 4x4x4 latents in shards of 4, with mirrors (--hflip)."""
    base = tmp_path_factory.mktemp("enc")
    make_folder(base / "ds")
    res = encode_dataset(base / "ds", base / "lat", vae="random", image_size=32, batch=2, shard_size=4, hflip=True,
                         device="cpu")
    return base, res


def test_random_vae_is_the_real_configuration_and_warns(capsys):
    vae = ae.build_vae("random")
    assert "WARNING: a randomly initialised autoencoder" in capsys.readouterr().err  # loud, every time
    assert tuple(vae.config.block_out_channels) == (128, 256, 512, 512) and vae.config.latent_channels == 4
    assert vae.config.layers_per_block == 2 and ae.scaling_factor(vae) == 0.18215
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863  # sd-vae-ft-ema's parameter count
    x = torch_rand(2, 3, 64, 64)
    z = ae.encode(vae, x)
    assert z.shape == (2, 4, 8, 8)
    again = ae.build_vae("random", warn=False)  # the same weights: the sampler decodes with the encoder's twin
    assert (ae.encode(again, x) == z).all()
    mean = vae.encode(x).latent_dist.mean * 0.18215  # the posterior mean, scaled (not a sample)
    assert (mean - z).abs().max() < 1e-5
    assert ae.decode(vae, z).shape == (2, 3, 64, 64)


def torch_rand(*shape):
    import torch

    return torch.rand(*shape, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_encode_writes_verified_shards_and_the_trainer_reads_them(encoded):
    base, res = encoded
    assert (res.images, res.classes, res.shards, res.encoded, res.resumed_from) == (6, 2, 2, 6, 0)
    assert res.latent_shape == [4, 4, 4] and res.views == 2 and res.vae_digest == "random-seed0"
    man = lt.verify(base / "lat")
    assert man["complete"] and [s["count"] for s in man["shards"]] == [4, 2] and man["classes"] == ["cat", "dog"]
    arr = np.load(base / "lat" / "shard-00000.npy")
    assert arr.dtype == np.float16 and arr.shape == (4, 2, 4, 4, 4)
    assert res.bytes == 6 * (2 * 4 * 4 * 4 * 2 + 8) + 2 * 128 * 2  # latents + labels + two .npy headers
    # the bytes are the encoder's: image 0 (cat/0.png), crop + [-1, 1] as the trainer, posterior mean x scale
    from jitmodel.data import ImageFolder

    img = ImageFolder(base / "ds", 32, 3)._load(0)[0].float().div(255).mul(2).sub(1)[None]
    vae = ae.build_vae("random", warn=False)
    want = ae.encode(vae, img)[0]
    assert np.abs(arr[0, 0].astype(np.float32) - want.numpy()).max() < 2e-3  # fp16 rounding
    mirror = ae.encode(vae, img.flip(-1))[0]
    assert np.abs(arr[0, 1].astype(np.float32) - mirror.numpy()).max() < 2e-3

    cfg = DataConfig(kind="latents", path=str(base / "lat"), num_workers=0)
    assert (cfg.vae, cfg.vae_digest) == ("random", "random-seed0")  # read from the folder: the checkpoint keeps it
    ds = build_dataset(cfg, 4, 4, 2)
    assert len(ds) == 6 and ds.classes == ["cat", "dog"] and [ds[i][1] for i in range(6)] == [0, 0, 0, 1, 1, 1]
    x0, x0f = ds[(0, False)][0], ds[(0, True)][0]
    assert x0.dtype.is_floating_point and np.allclose(x0.numpy(), arr[0, 0]) and np.allclose(x0f.numpy(), arr[0, 1])
    with pytest.raises(ValueError, match=r"latents are 4x4x4 but the model takes 4x8x8"):
        build_dataset(cfg, 8, 4, 2)
    with pytest.raises(ValueError, match=r"encoded by the autoencoder random-seed0 .* names 0123"):
        build_dataset(cfg.model_copy(update={"vae_digest": "0123"}), 4, 4, 2)


def test_a_second_run_checks_and_writes_nothing(encoded):
    base, _ = encoded
    before = {p.name: p.stat().st_mtime_ns for p in (base / "lat").iterdir()}
    res = encode_dataset(base / "ds", base / "lat", vae="random", image_size=32, batch=2, shard_size=4, hflip=True,
                         device="cpu")
    assert (res.encoded, res.resumed_from) == (0, 6)
    assert {p.name: p.stat().st_mtime_ns for p in (base / "lat").iterdir()} == before


@pytest.mark.parametrize("damage", ["tamper", "truncate", "delete", "incomplete"])
def test_a_damaged_folder_is_refused_in_one_line(encoded, tmp_path, damage):
    import shutil

    base, _ = encoded
    lat = tmp_path / "lat"
    shutil.copytree(base / "lat", lat)
    shard = lat / "shard-00001.npy"
    if damage == "tamper":  # same size, one value changed
        a = np.load(shard)
        a[0, 0, 0, 0, 0] += 1
        np.save(shard, a)
        want = "sha256 differs from the manifest"
    elif damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:100])
        want = "damaged or truncated"
    elif damage == "delete":
        shard.unlink()
        want = "missing"
    else:
        man = json.loads((lat / lt.MANIFEST).read_text())
        man["complete"], man["shards"] = False, man["shards"][:1]
        (lat / lt.MANIFEST).write_text(json.dumps(man))
        want = "incomplete .4 of 6 images encoded."
    with pytest.raises(lt.LatentsError, match=want) as e:
        lt.verify(lat)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=want):  # the trainer's loader refuses it too
        build_dataset(DataConfig(kind="latents", path=str(lat), num_workers=0), 4, 4, 2)
    r = subprocess.run([sys.executable, "-m", "jitplan", "data", "verify", str(lat)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr and want.split(" ")[0] in r.stderr


def test_a_resume_reencodes_a_damaged_shard(encoded, tmp_path):
    import shutil

    base, _ = encoded
    lat = tmp_path / "lat"
    shutil.copytree(base / "lat", lat)
    good = (lat / "shard-00001.npy").read_bytes()
    a = np.load(lat / "shard-00001.npy")
    a[:] = 0
    np.save(lat / "shard-00001.npy", a)
    res = encode_dataset(base / "ds", lat, vae="random", image_size=32, batch=2, shard_size=4, hflip=True,
                         device="cpu")
    assert (res.resumed_from, res.encoded) == (4, 2) and "shard 1 does not check" in res.notes[0]
    assert (lat / "shard-00001.npy").read_bytes() == good
    lt.verify(lat)


def test_bad_input_is_one_line_exit_2(encoded, tmp_path, cli):
    base, _ = encoded
    cases = [
        (["data", "encode", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--vae", "random"], "not found"),
        (["data", "encode", str(base / "ds"), "--out", str(tmp_path / "o"), "--vae", str(tmp_path)],
         "not a diffusers autoencoder folder"),
        (["data", "encode", str(base / "ds"), "--out", str(tmp_path / "o"), "--vae", "random", "--image-size", "30"],
         "not a multiple"),
        (["data", "encode", str(base / "ds"), "--out", str(base / "lat"), "--vae", "random", "--image-size", "64"],
         "holds latents of another encode"),
        (["data", "encode", str(base / "ds"), "--out", str(base / "ds" / "lat"), "--vae", "random"],
         "inside the dataset"),
        (["data", "verify", str(tmp_path)], None),  # not a latents folder: the image verifier's refusal
    ]
    (tmp_path / "o2").mkdir()
    (tmp_path / "o2" / "notes.txt").write_text("mine")
    cases.append((["data", "encode", str(base / "ds"), "--out", str(tmp_path / "o2"), "--vae", "random"],
                  "is not empty"))
    (tmp_path / "afile").write_text("x")
    cases.append((["data", "encode", str(base / "ds"), "--out", str(tmp_path / "afile"), "--vae", "random"],
                  "is a file"))
    import shutil

    shutil.copytree(base / "ds", tmp_path / "ds2")  # the dataset changed since the encode: not continued
    shutil.copytree(base / "lat", tmp_path / "lat2")
    (tmp_path / "ds2" / "train" / "dog" / "3.png").write_bytes((base / "ds" / "train" / "dog" / "0.png").read_bytes())
    cases.append((["data", "encode", str(tmp_path / "ds2"), "--out", str(tmp_path / "lat2"), "--vae", "random",
                   "--image-size", "32", "--shard-size", "4", "--hflip"], "its num_images, source_listing differ"))
    for argv, want in cases:
        r = cli(*argv)
        assert r.code == 2, (argv, r.err)
        assert "Traceback" not in r.err and (want is None or want in " ".join(r.err.split())), (argv, r.err)
    assert not (tmp_path / "o").exists() and not (base / "ds" / "lat").exists()  # nothing written


def _run_encode(src: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "jitplan", "data", "encode", str(src), "--out", str(out),
                             "--vae", "random", "--image-size", "32", "--shard-size", "2", "--batch", "1",
                             "--device", "cpu", "--json", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_killed_for_real_then_resumed_matches_an_uninterrupted_run(tmp_path):
    src = make_folder(tmp_path / "ds", per_class=8)
    proc = _run_encode(src, tmp_path / "lat")
    deadline = time.time() + 300
    man: dict = {}
    while time.time() < deadline and proc.poll() is None:  # SIGKILL once two shards are down, mid-run
        try:
            man = json.loads((tmp_path / "lat" / lt.MANIFEST).read_text())
        except (OSError, ValueError):
            man = {}
        if len(man.get("shards", [])) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the encode finished before it could be killed"
    done = sum(s["count"] for s in json.loads((tmp_path / "lat" / lt.MANIFEST).read_text())["shards"])
    assert 4 <= done < 16
    with pytest.raises(lt.LatentsError, match="incomplete"):
        lt.verify(tmp_path / "lat")
    resumed = _run_encode(src, tmp_path / "lat")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    res = json.loads(out)
    assert res["resumed_from"] == done and res["encoded"] == 16 - done  # continued, not from zero
    fresh = _run_encode(src, tmp_path / "fresh")
    assert fresh.communicate(timeout=300) and fresh.returncode == 0
    a, b = lt.verify(tmp_path / "lat"), lt.verify(tmp_path / "fresh")
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]  # the same bytes


@pytest.mark.slow
def test_a_local_weights_folder_loads_offline_and_is_named_by_its_digest(encoded, tmp_path):
    """The real-weights path (``--vae PATH``: from_pretrained, offline) with the random VAE saved as a diffusers
    folder: the same weights give the same latents, under the folder's own digest; a pipeline folder's vae/ too."""
    base, _ = encoded
    folder = tmp_path / "pipe" / "vae"
    ae.build_vae("random", warn=False).save_pretrained(folder)
    assert (folder / "config.json").is_file() and (folder / "diffusion_pytorch_model.safetensors").is_file()
    digest = ae.vae_digest(str(folder))
    assert len(digest) == 16 and digest == ae.vae_digest(str(tmp_path / "pipe"))  # the pipeline's vae/ sub-folder
    res = encode_dataset(base / "ds", tmp_path / "lat", vae=str(tmp_path / "pipe"), image_size=32, batch=2,
                         shard_size=4, hflip=True, device="cpu")
    assert res.vae_digest == digest and res.vae == str(folder.parent.resolve())
    ours, theirs = lt.verify(tmp_path / "lat"), lt.verify(base / "lat")
    assert [s["sha256"] for s in ours["shards"]] == [s["sha256"] for s in theirs["shards"]]  # same weights
    decode = ae.decoder_for({"kind": "latents", "vae": str(folder), "vae_digest": digest})
    assert tuple(decode(torch_rand(1, 4, 4, 4)).shape) == (1, 3, 32, 32)
    with pytest.raises(ae.VaeError, match="is not the one the latents were encoded with"):
        ae.decoder_for({"kind": "latents", "vae": str(folder), "vae_digest": "random-seed0"})
    (folder / "config.json").write_text('{"_class_name": "UNet2DModel"}')
    with pytest.raises(ae.VaeError, match="not an AutoencoderKL"):
        ae.build_vae(str(folder))


def test_the_loader_reads_latents_in_worker_processes(encoded):
    """DataLoader workers map the shards themselves (nothing mapped is pickled); flips pick the stored mirror."""
    import pickle

    import torch

    from jitmodel.data import ResumableSampler, build_loader

    base, _ = encoded
    cfg = DataConfig(kind="latents", path=str(base / "lat"), num_workers=2)
    ds = build_dataset(cfg, 4, 4, 2)
    ds[0]  # maps shard 0 here
    assert pickle.loads(pickle.dumps(ds))._maps == {}
    sampler = ResumableSampler(len(ds), 1, 0, seed=3, micro_batch=3, hflip=True)
    sampler.set_epoch(0)
    keys = list(sampler)
    got = [b for b in build_loader(ds, sampler, cfg, torch.device("cpu"), seed=0)]
    x = torch.cat([b[0] for b in got])
    want = torch.stack([ds[k][0] for k in keys])
    assert torch.equal(x, want) and any(f for _, f in keys) and x.shape == (6, 4, 4, 4)
