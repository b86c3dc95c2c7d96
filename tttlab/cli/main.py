"""The ``tttlab`` command line: one module per command in this folder, each with
``register_cli(subparsers)``; every command turns bad input into a one-line ``tttlab: error: ...``
message and a non-zero exit."""

from __future__ import annotations

import argparse
import sys

from tttlab.cli import (data, fitness, fold, function, models, perplexity, pretrain, structure,
                        sweep)
from tttlab.cli.options import CLIError

#: the commands, in ``tttlab --help`` order
COMMANDS = (perplexity, fitness, structure, fold, function, sweep, models, data, pretrain)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tttlab", description="Protein test-time training.")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.register_cli(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"tttlab: warning: {message}\n"


def main(argv=None) -> int:
    """Entry point of the ``tttlab`` console script (warnings print as one line each)."""
    import warnings

    parser = build_parser()
    args = parser.parse_args(argv)
    previous, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, FileNotFoundError, KeyError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"tttlab: error: {msg}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # e.g. an offline download
        print(f"tttlab: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = previous
