"""API-key lookup (the vastai SDK's order) and the redaction helper."""

from __future__ import annotations

from pathlib import Path

import pytest

from jitplan.secrets import MASK, redact, redact_obj, register_secret, vast_api_key, vast_key_files


def test_key_order_env_then_xdg_then_legacy(tmp_path: Path) -> None:
    home, xdg = tmp_path / "home", tmp_path / "xdg"
    (xdg / "vastai").mkdir(parents=True)
    home.mkdir()
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(xdg)}
    assert vast_api_key(env) is None
    (home / ".vast_api_key").write_text("legacy-key-0001\n")
    assert vast_api_key(env).get_secret_value() == "legacy-key-0001"
    (xdg / "vastai" / "vast_api_key").write_text("  xdg-key-00002 \n")
    assert vast_api_key(env).get_secret_value() == "xdg-key-00002"
    assert vast_api_key({**env, "VAST_API_KEY": "env-key-00003"}).get_secret_value() == "env-key-00003"
    assert vast_key_files({"HOME": str(home)}) == [home / ".config/vastai/vast_api_key", home / ".vast_api_key"]


def test_key_is_hidden_in_repr_and_registered(tmp_path: Path) -> None:
    key = vast_api_key({"HOME": str(tmp_path), "VAST_API_KEY": "registered-key-777"})
    assert "registered-key-777" not in repr(key) and "registered-key-777" not in str(key)
    assert redact("oops registered-key-777 leaked") == f"oops {MASK} leaked"


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("Authorization: Bearer abcDEF123456", "abcDEF123456"),
        ("GET /x?api_key=q1w2e3r4t5&limit=2", "q1w2e3r4t5"),
        ('{"api_key": "zz99zz99zz", "n": 1}', "zz99zz99zz"),
        ("vastai --api-key kkkk1111kkkk show", "kkkk1111kkkk"),
        ("password=hunter2hunter2", "hunter2hunter2"),
    ],
)
def test_patterns(text: str, gone: str) -> None:
    out = redact(text)
    assert gone not in out and MASK in out


def test_env_values_with_secret_names(monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefghijkl")
    monkeypatch.setenv("SOME_PATH", "/usr/local/bin")
    assert redact("token was hf_abcdefghijkl; path /usr/local/bin") == f"token was {MASK}; path /usr/local/bin"


def test_ordinary_text_untouched() -> None:
    text = "tokens=256 step 100 loss 0.31 lr=2e-4 in_context_len=32"
    assert redact(text) == text
    register_secret("abc")  # too short to mask: would eat ordinary words
    assert redact("abc abc") == "abc abc"


def test_redact_obj_nested() -> None:
    register_secret("nested-secret-xyz")
    out = redact_obj({"a": ["nested-secret-xyz", 3], "nested-secret-xyz": ("x", None)})
    assert out == {"a": [MASK, 3], MASK: ["x", None]}
