"""Protein sequences as tttlab takes them: the 20 standard amino acids, the input check every entry
point applies, and ESM-2's context length."""

from __future__ import annotations

STANDARD_AA = "ACDEFGHIKLMNPQRSTVWY"
VALID_LETTERS = set(STANDARD_AA) | {"X"}

#: residues an ESM-2 model sees at once: 1024 tokens minus BOS and EOS
MAX_RESIDUES = 1022


def check_sequence(seq: str, name: str = "sequence") -> str:
    """Upper-cased ``seq`` without whitespace; ``ValueError`` if empty, with letters outside the
    20 amino acids + X, or with nothing but X."""
    if not isinstance(seq, str):
        raise ValueError(f"{name}: expected a string, got {type(seq).__name__}")
    seq = "".join(seq.split()).upper()
    if not seq:
        raise ValueError(f"{name}: empty sequence")
    bad = sorted(set(seq) - VALID_LETTERS)
    if bad:
        raise ValueError(f"{name}: letters outside the 20 standard amino acids and X: {''.join(bad)}")
    if set(seq) == {"X"}:  # nothing to score or train on: every number would be NaN
        raise ValueError(f"{name}: only unknown residues (X); give at least one amino acid")
    return seq


def clean_sequence(seq: str, name: str = "sequence") -> str:
    """``check_sequence`` after reading the rare letters U, O (seleno-/pyrrolysine), B, Z and J as
    X (for curated sets such as DeepLoc that contain them)."""
    seq = "".join(str(seq).split()).upper().translate(str.maketrans("UOBZJ", "XXXXX"))
    return check_sequence(seq, name)
