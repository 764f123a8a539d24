"""The YAML reader remembers a parsed regular file while it is unchanged (one ``jitplan plan`` reads its recipe
up to four times): each caller gets its own copy, and a changed, replaced or special file is read again."""

from __future__ import annotations

import os

import pytest

from jitmodel import safeyaml


def test_an_unchanged_file_is_parsed_once_and_callers_get_their_own_copy(tmp_path, monkeypatch):
    f = tmp_path / "r.yaml"
    f.write_text("a: {b: [1, 2]}\n")
    calls = []
    real = safeyaml.load_text
    monkeypatch.setattr(safeyaml, "load_text", lambda text: calls.append(1) or real(text))
    one = safeyaml.read_yaml_mapping(f)
    one["a"]["b"].append(3)  # a caller changing its dict changes nobody else's
    two = safeyaml.read_yaml_mapping(f)
    assert two == {"a": {"b": [1, 2]}} and len(calls) == 1


def test_a_changed_or_replaced_file_is_read_again(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("a: 1\n")
    assert safeyaml.read_yaml_mapping(f) == {"a": 1}
    st = f.stat()
    f.write_text("a: 2\n")  # same size: the modification time (ns) tells it apart
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000))
    assert safeyaml.read_yaml_mapping(f) == {"a": 2}
    g = tmp_path / "g.yaml"
    g.write_text("a: 3\n")
    os.replace(g, f)  # another inode at the same path
    assert safeyaml.read_yaml_mapping(f) == {"a": 3}


def test_a_fifo_is_refused_and_never_cached(tmp_path):
    fifo = tmp_path / "p.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        safeyaml.read_yaml_mapping(fifo)
    assert not any(k[1] == os.stat(fifo).st_ino for k in safeyaml._PARSED)
