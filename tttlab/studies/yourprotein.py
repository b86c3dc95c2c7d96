"""Your own protein: turn what a user pastes into notebook 04 (a sequence or FASTA text, a FASTA
file, a ProteinGym-format DMS CSV, a PDB file) into checked inputs, with one-line errors instead of
tracebacks. Nothing here runs a model; the analyses live in ``scoring``, ``fitness`` and
``structure``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tttlab.common.sequences import check_sequence
from tttlab.data.fasta import parse_fasta

#: smallest ``alignment_zscore`` a structure's chain must reach against the sequence (unrelated
#: chains of the shared structures reach at most 4.8; the DMS wild types 40 and more)
MIN_ZSCORE = 8.0


@dataclass(frozen=True)
class ProteinInputs:
    """A checked set of inputs: the protein, and optionally its DMS assay and structure."""

    name: str
    sequence: str
    dms: object = None  #: a ``dms.DMSAssay`` checked against ``sequence``, or None
    structure: object = None  #: a ``targets.Target`` aligned to ``sequence``, or None

    def summary(self) -> str:
        """A few lines saying what will be analysed (no model involved)."""
        lines = [f"protein   {self.name}: {len(self.sequence)} residues"]
        if self.dms is not None:
            dropped = f" ({len(self.dms.dropped)} stop-codon rows dropped)" if len(
                self.dms.dropped) else ""
            lines.append(f"DMS       {self.dms.name}: {len(self.dms)} variants{dropped}")
        else:
            lines.append("DMS       none (no fitness evaluation)")
        if self.structure is not None:
            placed = int((~np.isnan(self.structure.coords[:, 0])).sum())
            lines.append(f"structure {self.structure.source.replace(':', ' chain ')}: {placed} of "
                         f"{len(self.sequence)} residues placed, "
                         f"{100 * self.structure.identity:.0f} % identical")
        else:
            lines.append("structure none (no contact evaluation)")
        return "\n".join(lines)


def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _existing(path, what: str) -> Path:
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise ValueError(f"{what} not found: {p}")
    return p


def _fasta_text(text: str, source: str) -> tuple[str, str]:
    """(name, sequence) of the single record in FASTA ``text``."""
    records = parse_fasta(text.splitlines(), source)
    if len(records) != 1:
        raise ValueError(f"{source}: expected one FASTA record, found {len(records)}")
    header, seq = records[0]
    name = header.split()[0] if header.split() else "my_protein"
    return name, check_sequence(seq, f"{source} ({name})")


def read_protein(sequence: str | None = None, fasta=None) -> tuple[str, str]:
    """(name, sequence) from a pasted ``sequence`` (plain letters or FASTA text; wins when
    given) or a one-record ``fasta`` file; ``ValueError`` with a one-line message otherwise."""
    if not _blank(sequence):
        if not isinstance(sequence, str):
            raise ValueError(f"sequence: expected a string, got {type(sequence).__name__}")
        if sequence.lstrip().startswith(">"):
            return _fasta_text(sequence, "pasted FASTA")
        return "my_protein", check_sequence(sequence)
    if _blank(fasta):
        raise ValueError("no protein given: paste a SEQUENCE or set FASTA to a file")
    path = _existing(fasta, "FASTA file")
    try:
        import gzip

        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError, EOFError) as err:
        raise ValueError(f"cannot read FASTA {path.name}: {err}") from None
    return _fasta_text(text, path.name)


def read_dms(dms_csv, sequence: str, name: str = "my_protein"):
    """A ProteinGym-format DMS file (``mutant``, ``DMS_score``) loaded and validated against
    ``sequence`` by ``tttlab.dms.load_dms``: a ``DMSAssay`` ready for
    ``tttlab.fitness.evaluate_assay``. Stop-codon rows are dropped; any other invalid row raises a
    one-line ``ValueError`` naming it (e.g. a wild-type residue that does not match)."""
    import tempfile

    from tttlab.data.dms import load_dms

    path = _existing(dms_csv, "DMS CSV")
    with tempfile.TemporaryDirectory() as folder:
        fasta = Path(folder) / f"{name}.fasta"
        fasta.write_text(f">{name}\n{check_sequence(sequence)}\n")
        return load_dms(path, wt_fasta=fasta)


def structure_target(sequence: str, pdb, chain: str | None = None, name: str = "my_protein"):
    """Your sequence placed on a structure: a ``targets.Target`` whose coordinates come from the
    chain's residues aligned to ``sequence`` (global alignment, BLOSUM62, gaps -10/-1), so contacts
    are scored in your numbering. ``chain=None`` takes the first protein chain.

    Raises a one-line ``ValueError`` for an unreadable file, a missing chain, or a chain that does
    not look like the protein: fewer than 10 aligned residues, under 30 % of them identical, or an
    alignment no better than chance (``alignment_zscore`` below ``MIN_ZSCORE``: unrelated chains
    align short stretches at high identity).
    """
    from tttlab.data.structures import (Target, align_to_chain, alignment_zscore, chain_residues,
                                        place_residues, read_chain)

    seq = check_sequence(sequence)
    path = _existing(pdb, "PDB file")
    atoms, chain = read_chain(path, None if _blank(chain) else str(chain).strip())
    residues = chain_residues(atoms)
    pairs = align_to_chain(seq, residues)
    same = sum(seq[i] == residues[k]["letter"] for i, k in pairs)
    if len(pairs) < 10 or same < 0.3 * len(pairs):
        raise ValueError(f"{path.name} chain {chain} does not match the sequence "
                         f"({same} identical of {len(pairs)} aligned residues)")
    z = alignment_zscore(seq, "".join(r["letter"] for r in residues))
    if z < MIN_ZSCORE:
        raise ValueError(f"{path.name} chain {chain} does not match the sequence: its alignment "
                         f"({same} identical of {len(pairs)} aligned residues) is no better than "
                         f"chance (z = {z:.1f} against shuffled chains, needs {MIN_ZSCORE:g})")
    coords, labels = place_residues(seq, residues, pairs)
    return Target(id=name, sequence=seq, coords=coords, residues=labels,
                  source=f"{path.name}:{chain}", identity=same / len(pairs), atoms=atoms)


def load_inputs(sequence: str | None = None, fasta=None, dms_csv=None, pdb=None,
                chain: str | None = None, name: str | None = None) -> ProteinInputs:
    """Check everything the user gave and return a ``ProteinInputs``.

    Parameters
    ----------
    sequence : pasted one-letter sequence or FASTA text (wins over ``fasta``); blank = not given.
    fasta : path of a one-record FASTA file (plain or .gz).
    dms_csv : optional ProteinGym-format assay of this sequence (1-based ``mutant`` strings),
        validated by ``tttlab.dms.load_dms`` (``read_dms``).
    pdb, chain : optional structure file and chain (``None``: first protein chain); the chain is
        aligned to the sequence (``structure_target``).
    name : label for tables and figures (default: the FASTA header's first word).

    Raises
    ------
    ValueError with a one-line message naming the first problem found.
    """
    label, seq = read_protein(sequence, fasta)
    assay = read_dms(dms_csv, seq, name or label) if not _blank(dms_csv) else None
    target = structure_target(seq, pdb, chain, name or label) if not _blank(pdb) else None
    return ProteinInputs(name=name or label, sequence=seq, dms=assay, structure=target)


def validate_inputs(**kwargs) -> str:
    """``load_inputs(**kwargs)``'s one-line problem message, or ``""`` when the inputs are fine."""
    try:
        load_inputs(**kwargs)
    except ValueError as err:
        return str(err)
    return ""
