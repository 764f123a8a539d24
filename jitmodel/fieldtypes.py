"""Bounded field types of the configs: strict integers with a ceiling, finite floats in a range, printable names.

Strict integers ("16" is not an int) with a ceiling; floats must be finite (no .inf, nan, 1e400) and each
number has a sane range, so a hostile file fails validation naming the field instead of overflowing later.

    >>> from pydantic import TypeAdapter
    >>> TypeAdapter(PrintableText).validate_python("jit-b-16")
    'jit-b-16'
    >>> TypeAdapter(Annotated[int, int_in(1, 16)]).validate_python(3)
    3
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field

_BIG = 2**40
PositiveInt = Annotated[int, Field(gt=0, le=_BIG, strict=True)]
NonNegInt = Annotated[int, Field(ge=0, le=_BIG, strict=True)]
UnitFloat = Annotated[float, Field(ge=0.0, le=1.0)]


def int_in(lo: int, hi: int) -> Any:
    """The bounds of a strict integer field, for ``Annotated[int, int_in(lo, hi)]``."""
    if lo > 0:  # "greater than 0", as PositiveInt words it
        return Field(gt=lo - 1, le=hi, strict=True)
    return Field(ge=lo, le=hi, strict=True)


def float_in(gt: float | None = None, ge: float | None = None, le: float | None = None,
           lt: float | None = None) -> Any:
    """The bounds of a float field, for ``Annotated[float, float_in(...)]``."""
    return Field(gt=gt, ge=ge, le=le, lt=lt)


def _printable(v: str) -> str:
    if not v.isprintable():
        bad = next(c for c in v if not c.isprintable())
        raise ValueError(f"holds the control character {bad!r}; a name is printable text")
    return v


# A name shown to people and written into files and logs (a plan's recipe): printable, one line, short.
PrintableText = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable)]
