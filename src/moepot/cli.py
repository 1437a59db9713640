"""The ``moepot`` command line: one console script, one subcommand per job.

Each area of the package owns its subcommands in its own ``cli`` module, exposing
``register(subparsers)``; this file only assembles them, so adding a command never means
editing a central switch. Errors raised as :class:`moepot.errors.MoepotError` are printed as
one line (``moepot: error: ...``) with exit status 2; output into a closed pipe ends quietly
(exit status 141, as a shell reports a process stopped by SIGPIPE).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from moepot._imports import import_if_present
from moepot.errors import MoepotError
from moepot.malloc import tune_malloc

# Modules that contribute subcommands, in the order their commands appear in --help.
COMMAND_MODULES = (
    "moepot.models.cli",  # info
    "moepot.data.cli",  # data list|info|validate|convert|generate
    "moepot.train.cli",  # pretrain, finetune, evaluate
    "moepot.analysis.cli",  # route, quickstart
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moepot",
        description="Pre-train, fine-tune and evaluate MoE-POT, DPOT and FNO on mixtures of PDE datasets.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = import_if_present(name)
        if module is not None:
            module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    tune_malloc()  # reuse freed tensor memory instead of faulting in fresh pages (moepot.malloc)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except MoepotError as exc:
        print(f"moepot: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("moepot: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`moepot data list | head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit-time flush fails too
        return 141  # 128 + SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
