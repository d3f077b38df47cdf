"""CSV cells that a spreadsheet never runs as a formula: the one rule for every CSV aas writes.

Spreadsheets read a cell that starts with ``=``, ``+``, ``-`` or ``@`` (or a
tab or a carriage return before one) as a formula, and a formula can fetch
URLs or run commands when the file is opened. Names and file names come from
people and cameras, so :func:`safe_cell` writes such a text cell with a
``'`` in front, which spreadsheets show as text. Numbers stay numbers: a
number, or text that is a plain decimal number (``-0.5``, ``-3``, ``1e-3``),
is written as it is.

:func:`read_cell` takes the ``'`` off again, so a command that reads a CSV
aas wrote (``X.rows.csv``, ``pairs.csv``, ``media.csv``) gets the text back
exactly. The rule is a bijection: a text that already starts with ``'``
before such a character gets one more ``'`` on writing, and reading takes
exactly one off.
"""

from __future__ import annotations

import re

__all__ = ["read_cell", "safe_cell", "safe_rows"]

_FORMULA_START = frozenset("=+-@\t\r")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _quoted_on_writing(text: str) -> bool:
    # decided on the text after any leading quotes, so writing and reading agree
    rest = text.lstrip("'")
    return rest[:1] in _FORMULA_START and _NUMBER.fullmatch(rest) is None


def safe_cell(value):
    """``value`` as a CSV cell no spreadsheet runs: text a spreadsheet would read as a
    formula gets a ``'`` in front; numbers and other text are returned as they are.

    >>> [safe_cell(v) for v in ["=1+1", "@SUM(A1)", "-x.jpg", "-0.5", -3, "Leo"]]
    ["'=1+1", "'@SUM(A1)", "'-x.jpg", '-0.5', -3, 'Leo']
    """
    if isinstance(value, str) and _quoted_on_writing(value):
        return "'" + value
    return value


def safe_rows(rows):
    """Each row of ``rows`` with :func:`safe_cell` applied to every cell (lazily)."""
    for row in rows:
        yield [safe_cell(v) for v in row]


def read_cell(text: str) -> str:
    """A cell as :func:`safe_cell` was given it: the ``'`` it added is taken off.

    >>> read_cell("'=1+1"), read_cell("''=1"), read_cell("'Leo"), read_cell("-0.5")
    ('=1+1', "'=1", "'Leo", '-0.5')
    """
    if not isinstance(text, str):
        raise TypeError(f"read_cell: 'text' must be a str; got {type(text).__name__}.")
    if text.startswith("'") and _quoted_on_writing(text):
        return text[1:]
    return text
