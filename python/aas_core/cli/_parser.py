"""The ``aas`` argument parser: one subcommand per command module, defaults in every help."""

from __future__ import annotations

import argparse

__all__ = ["build_parser"]


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            not action.option_strings
            or action.required
            or action.nargs == 0  # flags: off unless given
            or action.default is argparse.SUPPRESS
            or "default" in text
        ):
            return text
        default = "none" if action.default is None else "%(default)s"
        return f"{text} (default {default})"


class _Parser(argparse.ArgumentParser):
    """argparse with :class:`_HelpFormatter`; subcommands get the same class."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser(commands, version=None):
    """The ``aas`` parser with the subcommands of ``commands`` (modules with ``add_parser``),
    and ``--version`` when ``version`` is given. A command that runs another builds a parser
    with just that one."""
    parser = _Parser(
        prog="aas",
        description="Ambiguity-aware active learning for re-identification (aas-core).",
    )
    if version is not None:
        parser.add_argument("--version", action="version", version=f"aas-core {version}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    for command in commands:
        command.add_parser(sub)
    parser.set_defaults(_commands=sub.choices)
    return parser
