"""The ``aas`` command line: demo, catalogue, propose, annotate, refine, embed, train, evaluate.

One module per command, each with ``add_parser(sub)`` and ``run(args)``; ``_common`` holds
the argument types and input readers they share. A command only parses, calls the library
and prints.
"""

from __future__ import annotations

import csv
import re
import sys

from ._parser import build_parser

__all__ = ["main"]

# The library's messages start with the function that refused ("cluster_features: ..."),
# which means nothing to someone who typed a command; the commands check what they can
# first, and this drops the name from whatever else gets through.
_INTERNAL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*: ")


def _build_parser():
    # the commands (and numpy, scipy, ... behind them) are imported here, inside main(), so
    # that a Ctrl+C while they load is one line like any other
    from .. import __version__
    from . import annotate, catalogue, demo, embed, evaluate, propose, refine, train

    return build_parser(
        (demo, catalogue, propose, annotate, refine, embed, train, evaluate), __version__
    )


def _refuse_special_files(args):
    """Refuses a FIFO, device or socket given for any file or folder of the command, before
    anything is opened: reading a FIFO waits for ever, and an output would replace it."""
    from pathlib import Path

    from ._common import _refuse_special

    for action in args._commands[args.command]._actions:
        value = getattr(args, action.dest, None)
        if isinstance(value, Path):
            name = max(action.option_strings, key=len, default=None)
            positional = {"embeddings": "embeddings file"}.get(action.dest, action.metavar)
            _refuse_special(value, name or positional or action.dest)


def main(argv=None):
    try:
        parser = _build_parser()
    except KeyboardInterrupt:
        print("\naas: interrupted", file=sys.stderr)
        return 130
    args = parser.parse_args(argv)
    try:
        _refuse_special_files(args)
        return args.func(args)
    except (ValueError, TypeError, OSError, csv.Error, EOFError, OverflowError) as exc:
        # a user's mistake (a bad file, a full disk, ...): one line, never a traceback
        text = _INTERNAL_NAME.sub("", " ".join(str(exc).split())) or type(exc).__name__
        print(f"aas {args.command}: error: {text}", file=sys.stderr)
        return 2
    except MemoryError as exc:  # numpy says how much it wanted
        detail = f" ({exc})" if str(exc) else ""
        print(
            f"aas {args.command}: error: out of memory{detail}; try fewer images or a smaller "
            "--budget",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        # Ctrl-C: one line, no traceback; outputs are written atomically, so nothing is
        # left half written. 130 = 128 + SIGINT, as shells report it.
        print(f"\naas {args.command}: interrupted", file=sys.stderr)
        return 130
