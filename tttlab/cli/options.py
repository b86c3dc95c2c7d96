"""What every ``tttlab`` command shares: the one-line error type, sequence input, the model options."""

from __future__ import annotations

from tttlab.common.sequences import check_sequence
from tttlab.data.fasta import read_fasta


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def read_sequences(sequence: str | None, fasta: str | None) -> list[tuple[str, str]]:
    """(id, sequence) pairs from a literal sequence or a FASTA file, validated."""
    if fasta:
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


def add_homolog_args(parser, per_protein: bool = False) -> None:
    """``--homologs`` and ``--homolog-region`` (homolog-aware TTT); ``per_protein``: a command over
    many proteins, whose MSA files come from a folder, one per protein."""
    what = ("a folder of MSA files named after the proteins (ID.a3m, ID.a2m, ID.sto, ID.fasta, "
            "gzipped or not)" if per_protein else
            "an MSA file (A3M, A2M, aligned FASTA, Stockholm)")
    parser.add_argument("--homologs", default=None,
                        help=f"TTT on each protein and its homologs: {what}, or 'auto' "
                             "(jackhmmer of the Swiss-Prot file)")
    parser.add_argument("--homolog-region", choices=("full", "aligned"), default=None,
                        help="whole homolog sequences (full) or their residues in the target's "
                             "columns (aligned); default: the preset's")


def config_from_args(args):
    """The model's preset TTTConfig with the command's ``--ttt-steps`` and ``--seed``."""
    from tttlab.engine.config import preset

    if args.ttt_steps < 0:
        raise CLIError("--ttt-steps must be >= 0")
    extra = {}
    if getattr(args, "homolog_region", None):
        extra["homolog_region"] = args.homolog_region
    return preset(args.model, steps=args.ttt_steps, seed=args.seed, **extra)
