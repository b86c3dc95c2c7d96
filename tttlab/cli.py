"""The ``tttlab`` command line: ``perplexity`` here; the case studies register their own sub-commands
(``fitness``, ``contacts``, ``function``, ``sweep``, ``data``, ``pretrain``) through ``register_cli``.

Every command turns bad input into a one-line ``tttlab: error: ...`` message and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time

#: modules that add sub-commands: each defines ``register_cli(subparsers)``
COMMAND_MODULES = ("tttlab.data", "tttlab.fitness", "tttlab.structure", "tttlab.function",
                   "tttlab.sweep", "tttlab.pretrain")


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def read_sequences(sequence: str | None, fasta: str | None) -> list[tuple[str, str]]:
    """(id, sequence) pairs from a literal sequence or a FASTA file, validated."""
    from .scoring import check_sequence

    if fasta:
        from .data import read_fasta

        try:
            records = read_fasta(fasta)
        except (OSError, UnicodeDecodeError, EOFError) as err:
            raise CLIError(f"cannot read FASTA {fasta}: {err}") from None
        if not records:
            raise CLIError(f"{fasta}: no FASTA records (expected lines starting with '>')")
        return [(h.split()[0] if h.split() else f"seq{i + 1}", check_sequence(s, h or f"seq{i + 1}"))
                for i, (h, s) in enumerate(records)]
    if sequence is None:
        raise CLIError("give a SEQUENCE or --fasta FILE")
    return [("seq1", check_sequence(sequence))]


def add_model_args(parser, ttt_steps_default: int = 30) -> None:
    """The options every model-using command shares."""
    parser.add_argument("--model", default="tttlab-mini",
                        help="tttlab-mini, an ESM-2 name (esm2_t12_35M_UR50D ...) or a local .pt")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: auto)")
    parser.add_argument("--ttt-steps", type=int, default=ttt_steps_default,
                        help=f"TTT optimiser steps (default {ttt_steps_default}; 0 = no TTT)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="machine-readable JSON output")


def config_from_args(args):
    """The model's preset TTTConfig with the command's ``--ttt-steps`` and ``--seed``."""
    from .config import preset

    if args.ttt_steps < 0:
        raise CLIError("--ttt-steps must be >= 0")
    return preset(args.model, steps=args.ttt_steps, seed=args.seed)


def _perplexity(args) -> int:
    from .models import load_model
    from .scoring import pseudo_perplexity
    from .ttt import customized

    records = read_sequences(args.sequence, args.fasta)
    cfg = config_from_args(args)
    model, _ = load_model(args.model, device=args.device)
    for name, seq in records:
        start = time.perf_counter()
        before = pseudo_perplexity(model, seq)
        with customized(model, seq, cfg, progress=not args.json):
            after = pseudo_perplexity(model, seq) if cfg.steps else before
        row = {"id": name, "length": len(seq), "pseudo_perplexity_before": round(before, 4),
               "pseudo_perplexity_after": round(after, 4),
               "seconds": round(time.perf_counter() - start, 2)}
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(f"{name}\tL={len(seq)}\tpseudo-perplexity {before:.3f} -> {after:.3f}"
                  f"\t({row['seconds']:.1f} s)", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tttlab", description="Protein test-time training.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("perplexity", help="pseudo-perplexity before and after TTT")
    p.add_argument("sequence", nargs="?", help="a protein sequence (one-letter codes)")
    p.add_argument("--fasta", help="FASTA file with one or more sequences")
    add_model_args(p)
    p.set_defaults(func=_perplexity)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # module not written yet
                continue
            raise
        if hasattr(module, "register_cli"):
            module.register_cli(sub)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``tttlab`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, FileNotFoundError, KeyError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"tttlab: error: {msg}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # e.g. an offline download
        print(f"tttlab: error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
