"""The ``voicenlu`` command. Thin: it parses arguments and calls the modules that do the work.

Each module here registers one group of commands (``add_commands``) and holds their functions;
``common`` holds the options and printing they share. Heavy imports (torch, transformers)
happen inside the commands that need them, so ``voicenlu predict`` starts fast on a
runtime-only install.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from voicenlu.cli import bundle, data, evaluate, listen, optimize, predict, serve, train
from voicenlu.errors import VoiceNLUError
from voicenlu.extras import extra_providing, missing_extra
from voicenlu.version import __version__

# In the order ``voicenlu --help`` lists them.
COMMAND_GROUPS = (data, train, evaluate, predict, optimize, bundle, listen, serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voicenlu",
        description="Intent detection and slot filling for voice assistants.",
        epilog=(
            "Start here:\n"
            "  voicenlu data validate assistant.yml   # your own assistant: Rasa, Snips NLU, CSV\n"
            "  voicenlu train --data assistant.yml    # writes runs/assistant/bundle\n"
            '  voicenlu predict runs/assistant/bundle "turn on the kitchen lights"\n'
            "  voicenlu train --quick                 # or the SNIPS benchmark, a few minutes"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"voicenlu {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = "voicenlu " + shlex.join(argv)  # recorded with benchmark tables
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except VoiceNLUError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:  # an extra's package, imported past the first checks
        extra = extra_providing(exc.name or "")
        if extra is None or args.debug:
            raise
        print(f"error: {missing_extra(extra, args.command, exc.name)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
