"""The skeleton of a service's command line: subcommands that each take ``--config``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from typing import TypeVar

from twin_common.config import ConfigError

Config = TypeVar("Config")

#: Exit status of a command whose configuration cannot be used.
EXIT_CONFIG = 2


def command_parser(
    prog: str, description: str, commands: Mapping[str, str], config_help: str
) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser, and one subcommand parser per ``commands`` entry (name: help).

    Each subcommand takes ``--config FILE``; ``args.command`` names the one given.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    parsers = {}
    for name, text in commands.items():
        parsers[name] = sub.add_parser(name, help=text)
        parsers[name].add_argument("--config", help=config_help)
    return parser, parsers


def load_or_say_why(prog: str, load: Callable[[], Config]) -> Config | None:
    """``load()``'s configuration, or None after printing why it cannot be used."""
    try:
        return load()
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None
