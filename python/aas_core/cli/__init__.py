"""The ``aas`` command line: demo, catalogue, propose, annotate, refine, embed, train, evaluate.

One module per command, each with ``add_parser(sub)`` and ``run(args)``; ``_common`` holds
the argument types and input readers they share. A command only parses, calls the library
and prints.
"""

from __future__ import annotations

import argparse
import csv
import sys

from . import annotate, catalogue, demo, embed, evaluate, propose, refine, train

__all__ = ["main"]


def _build_parser():
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="aas",
        description="Ambiguity-aware active learning for re-identification (aas-core).",
    )
    parser.add_argument("--version", action="version", version=f"aas-core {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    for command in (demo, catalogue, propose, annotate, refine, embed, train, evaluate):
        command.add_parser(sub)
    return parser


def main(argv=None):
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError, csv.Error, EOFError, OverflowError) as exc:
        # a user's mistake (a bad file, a full disk, ...): one line, never a traceback
        text = " ".join(str(exc).split()) or type(exc).__name__
        print(f"aas {args.command}: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C: one line, no traceback; outputs are written atomically, so nothing is
        # left half written. 130 = 128 + SIGINT, as shells report it.
        print(f"\naas {args.command}: interrupted", file=sys.stderr)
        return 130
