"""Trajectory frames, pictures and the self-contained page; the page driven in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from test_sample_tinyckpt import tiny_checkpoint  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

from jitmodel.config import SampleConfig  # noqa: E402
from jitmodel.sample import noise_for_ids, sample  # noqa: E402
from jitmodel.trajectory import compute_frames, draw_patch_grid, render  # noqa: E402

CHROMIUM = os.environ.get("JITMODEL_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("JITMODEL_TEST_ARTIFACTS", Path(__file__).parent / "artifacts"))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory)


@pytest.mark.slow
def test_frames_are_the_sampler_states(ckpt):
    from jitmodel.sample import load_for_sampling

    m = load_for_sampling(ckpt)
    cfg = SampleConfig(steps=5, cfg=2.0, interval_min=0.1, interval_max=1.0, mode="exact")
    frames = compute_frames(m.x_hat, label=3, num_classes=10, img_size=32, steps=5, sample_cfg=cfg, seed=4)
    assert [f.step for f in frames] == list(range(6))
    assert [round(f.t, 6) for f in frames] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    z0 = noise_for_ids([0], 4, (3, 32, 32))
    assert torch.equal(frames[0].z, z0[0])  # frame 0 is the noise
    with torch.no_grad():
        final, _ = sample(m.x_hat, z0, torch.tensor([3]), cfg, num_classes=10)
    assert torch.allclose(frames[-1].z, final[0], atol=1e-6)  # the last frame is the sampled image
    # x_hat converges to the image: its distance to the final image shrinks over the steps
    d = [(f.x_hat - final[0]).abs().mean().item() for f in frames]
    assert d[-1] < d[1] < d[0] or d[-1] < 0.5 * d[0], d


def test_patch_grid_lines_sit_on_patch_borders():
    img = torch.zeros(3, 32, 32, dtype=torch.uint8)
    g = draw_patch_grid(img, 8)
    rows = [k for k in range(32) if g[0, k, 3] == 255]
    assert rows == [0, 8, 16, 24, 31]
    assert g[:, 4, 4].tolist() == [0, 0, 0]  # inside a patch: untouched


def test_render_upscales_small_images():
    from jitmodel.trajectory import Frame, display_scale

    f = Frame(0, 0.0, torch.zeros(3, 32, 32), torch.ones(3, 32, 32))
    s = display_scale(32)
    views = render(f, 8, s)
    assert s == 4 and all(tuple(v.shape) == (3, 128, 128) for v in views.values())
    assert views["xhat"].min() == 255 and views["z"].max() == 128  # (0 + 1) / 2 * 255 rounds to 128


@pytest.mark.slow
def test_cli_writes_strip_and_self_contained_page(ckpt, tmp_path, capsys):
    from PIL import Image

    from jitmodel.cli import run

    code = run(["trajectory", "--ckpt", str(ckpt), "--class", "3", "--classes", "1,7", "--steps", "4",
                "--device", "cpu", "--out", str(tmp_path / "strip.png"), "--html", str(tmp_path / "page.html"),
                "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    info = json.loads(out.out)
    assert info["classes"] == [3, 1, 7] and info["frames"] == 5
    with Image.open(tmp_path / "strip.png") as im:  # 3 classes x 3 rows, 5 columns of 128 px (+2 px pads)
        assert im.size == (5 * 130 + 2, 9 * 130 + 2)
    html = (tmp_path / "page.html").read_text()
    assert "http://" not in html and "https://" not in html and "src=\"" not in html.split("<script id")[0]
    data = json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', html, re.S).group(1))
    assert [c["name"] for c in data["classes"]] == ["3", "1", "7"]
    assert all(f[v].startswith("data:image/png;base64,") for c in data["classes"] for f in c["frames"]
               for v in ("z", "grid", "xhat"))


@pytest.mark.net
@pytest.mark.slow
def test_page_in_headless_chromium(ckpt, tmp_path):
    """Click through the steps and the class picker in a real browser; keep a screenshot."""
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"chromium is not installed ({CHROMIUM}); apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download)")
    from jitmodel.cli import run

    page_path = tmp_path / "page.html"
    assert run(["trajectory", "--ckpt", str(ckpt), "--classes", "2,5", "--steps", "4", "--device", "cpu",
                "--out", str(tmp_path / "strip.png"), "--html", str(page_path)]) == 0
    exe = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=args, headless=True)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 420})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_path.as_uri())
            label = page.locator("#label")
            # issue 23: it opens on the finished image (was step 0, pure noise) and says which way t runs
            assert label.inner_text().startswith("step 4/4 · t = 1.000") and page.locator("#next").is_disabled()
            assert "t runs from 0 (pure noise, step 0) to 1" in page.locator("#note").inner_text()
            src4 = page.locator("#img-z").get_attribute("src")
            page.click("#prev")
            page.click("#prev")
            assert label.inner_text().startswith("step 2/4 · t = 0.500")
            assert page.locator("#img-z").get_attribute("src") != src4
            page.locator("#slider").fill("0")  # the slider jumps to the first frame, the noise
            assert label.inner_text().startswith("step 0/4") and page.locator("#prev").is_disabled()
            page.locator("#slider").fill("4")
            last_class0 = page.locator("#img-xhat").get_attribute("src")
            page.select_option("#cls", "1")  # the second precomputed class
            assert page.locator("#img-xhat").get_attribute("src") != last_class0
            assert page.locator("#cls option").all_inner_texts() == ["2", "5"]
            page.locator("h1").click()  # focus the page, not the picker, then use the keyboard
            page.keyboard.press("ArrowLeft")
            assert label.inner_text().startswith("step 3/4")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "trajectory_page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 5000
            assert not errors, errors
            assert all(u.startswith(("file:", "data:")) for u in requests), requests  # no network
        finally:
            browser.close()
