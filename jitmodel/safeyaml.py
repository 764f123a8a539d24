"""YAML with limits, and ``read_yaml_mapping``, the project's one YAML file reader (re-exported by jitmodel.config).

A config file is small, UTF-8 text, a tree of modest depth with unique keys. Anything else is refused
with one line (ValueError) before it can cost time or memory: a file over ``MAX_BYTES``, text that is not
UTF-8 (UTF-16, Latin-1, binary), nesting deeper than ``MAX_DEPTH``, aliases that expand to more than
``MAX_NODES`` values (a 1 KB "billion laughs" file), and a key given twice in one mapping.

    >>> load_text("a: 1\\nb: [1, 2]\\n")
    {'a': 1, 'b': [1, 2]}
    >>> load_text("a: 1\\na: 2\\n")
    Traceback (most recent call last):
    ...
    ValueError: key 'a' appears twice in one mapping (line 2)
"""

from __future__ import annotations

import copy
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from jitmodel.bounded_io import read_regular

MAX_BYTES = 256 * 1024
MAX_DEPTH = 64
MAX_NODES = 100_000  # values after alias expansion
_MERGE = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader that counts depth while composing and refuses duplicate keys while constructing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ValueError(f"nesting deeper than {MAX_DEPTH} levels (line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:
        seen: set[tuple[str, str]] = set()
        for key, _ in node.value:
            if isinstance(key, ScalarNode) and key.tag != _MERGE:
                k = (key.tag, key.value)
                if k in seen:
                    raise ValueError(f"key {key.value[:60]!r} appears twice in one mapping "
                                     f"(line {key.start_mark.line + 1})")
                seen.add(k)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: Node, memo: dict[int, int]) -> int:
    """Values the node stands for once every alias is expanded (aliases share nodes; this counts copies)."""
    got = memo.get(id(node))
    if got is not None:
        return got
    memo[id(node)] = MAX_NODES + 1  # a node reached again while being counted: a recursive alias
    if isinstance(node, SequenceNode):
        total = 1 + sum(_expanded_size(v, memo) for v in node.value)
    elif isinstance(node, MappingNode):
        total = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        total = 1
    total = min(total, MAX_NODES + 1)
    memo[id(node)] = total
    return total


def load_text(text: str) -> Any:
    """Parse YAML text within the limits; ValueError (one line) otherwise, yaml.YAMLError for bad syntax."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_NODES:
            raise ValueError(f"aliases expand to more than {MAX_NODES:,} values (a 'billion laughs' file?)")
        return loader.construct_document(node)
    except RecursionError:
        raise ValueError(f"nesting deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()


def read_text(path: Path) -> str:
    """The file's text: a regular file of at most MAX_BYTES, UTF-8 (a UTF-8 BOM is allowed)."""
    if path.exists() and not path.is_file() and not path.is_dir():
        raise ValueError(f"{path} is not a regular file")
    data = read_regular(path, MAX_BYTES, "config")  # no FIFO, device or /proc file; never past its size
    if len(data) > MAX_BYTES:
        raise ValueError(f"{path} is larger than {MAX_BYTES // 1024} KiB: not a config file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r})") from None


_PARSED: dict[tuple[int, int, int, int], Any] = {}  # (device, inode, size, mtime_ns) -> parsed document
_PARSED_MAX = 64


def _parse_file(p: Path) -> Any:
    """``load_text(read_text(p))``, remembered for an unchanged regular file: one ``jitplan plan`` reads the
    same recipe up to four times (the plan and the bigger-GPU advice), 18 ms of pure-Python YAML each. The
    caller gets its own copy (the cache never hands out a dict another caller may change)."""
    try:
        st = p.stat()
    except OSError:
        st = None
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) if st is not None and stat.S_ISREG(st.st_mode) else None
    if key is not None and key in _PARSED:
        return copy.deepcopy(_PARSED[key])
    doc = load_text(read_text(p))
    if key is not None:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[key] = copy.deepcopy(doc)
    return doc


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict:
    """The mapping a YAML file holds; ValueError with one line when the file is missing, a folder,
    not text, not YAML or not a mapping, or past a limit of this module (256 KiB, UTF-8, depth
    64, 100,000 values after alias expansion, no duplicate keys). The project's one YAML file reader."""
    p = Path(path)
    try:
        raw = _parse_file(p)
    except FileNotFoundError:
        raise ValueError(f"{what} file not found: {p}") from None
    except IsADirectoryError:
        raise ValueError(f"{what} path is a directory: {p}") from None
    except OSError as e:
        raise ValueError(f"cannot read {what} file {p}: {e.strerror or type(e).__name__}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{p} is not valid YAML: {' '.join(str(e).split())[:160]}") from None
    except ValueError as e:
        raise ValueError(f"{p}: {e}" if not str(e).startswith(str(p)) else str(e)) from None
    if not isinstance(raw, dict):
        raise ValueError(f"{p} does not hold a {what} mapping")
    return raw
