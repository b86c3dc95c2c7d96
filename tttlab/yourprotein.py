"""Your own protein: turn what a user pastes into notebook 04 (a sequence or FASTA text, a FASTA file,
a ProteinGym-format DMS CSV, a PDB file) into checked inputs, with one-line errors instead of tracebacks.

Nothing here runs a model; the analyses themselves live in ``scoring``, ``fitness`` and ``structure``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .scoring import check_sequence, parse_mutant


@dataclass(frozen=True)
class ProteinInputs:
    """A checked set of inputs: the protein, and optionally its DMS assay and structure."""

    name: str
    sequence: str
    dms_csv: Path | None = None
    n_variants: int = 0
    pdb: Path | None = None
    chain: str | None = None
    n_structure_residues: int = 0

    def summary(self) -> str:
        """A few lines saying what will be analysed (no model involved)."""
        lines = [f"protein   {self.name}: {len(self.sequence)} residues"]
        lines.append(f"DMS       {self.dms_csv.name}: {self.n_variants} variants"
                     if self.dms_csv else "DMS       none (no fitness evaluation)")
        lines.append(f"structure {self.pdb.name} chain {self.chain}: "
                     f"{self.n_structure_residues} residues" if self.pdb
                     else "structure none (no contact evaluation)")
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
    records, header, chunks = [], None, []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(">"):
            if header is not None:
                records.append((header, "".join(chunks)))
            header, chunks = line[1:].strip(), []
        elif line:
            if header is None:
                raise ValueError(f"{source}: text before the first '>' header line")
            chunks.append(line)
    if header is not None:
        records.append((header, "".join(chunks)))
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


def check_dms(dms_csv, sequence: str) -> tuple[Path, int]:
    """(path, number of rows) of a ProteinGym-format CSV (``mutant``, ``DMS_score``) whose mutants
    all match ``sequence``; ``ValueError`` naming the first problem otherwise."""
    import pandas as pd

    path = _existing(dms_csv, "DMS CSV")
    try:
        table = pd.read_csv(path)
    except Exception as err:  # pandas raises many parser error types
        raise ValueError(f"cannot read DMS CSV {path.name}: {str(err).splitlines()[0]}") from None
    missing = [c for c in ("mutant", "DMS_score") if c not in table.columns]
    if missing:
        raise ValueError(f"{path.name}: missing column(s) {', '.join(missing)} (ProteinGym format: "
                         "mutant like A24C or A24C:D30N, DMS_score higher = fitter)")
    if table.empty:
        raise ValueError(f"{path.name}: no rows")
    bad, first = 0, None
    for mutant in table["mutant"].astype(str).unique():
        try:
            parse_mutant(sequence, mutant)
        except ValueError as err:
            bad, first = bad + 1, first or str(err)
    if bad:
        raise ValueError(f"{path.name}: {bad} mutant(s) do not fit the sequence, e.g. {first}")
    return path, len(table)


def check_pdb(pdb, chain: str | None = None) -> tuple[Path, str, int]:
    """(path, chain, number of amino-acid residues) of a readable PDB file; ``chain=None`` takes
    the first chain with amino acids. ``ValueError`` for an unreadable file or a missing chain."""
    import biotite.structure as struc
    from biotite.structure.io.pdb import PDBFile

    path = _existing(pdb, "PDB file")
    try:
        atoms = PDBFile.read(str(path)).get_structure(model=1)
    except Exception as err:  # biotite raises several types for malformed files
        raise ValueError(f"cannot read PDB {path.name}: {str(err).splitlines()[0]}") from None
    atoms = atoms[struc.filter_amino_acids(atoms)]
    chains = list(dict.fromkeys(atoms.chain_id.tolist()))
    if not chains:
        raise ValueError(f"{path.name}: no amino-acid residues")
    chain = chains[0] if _blank(chain) else str(chain).strip()
    if chain not in chains:
        raise ValueError(f"{path.name}: no chain {chain!r}; chains with amino acids: "
                         + ", ".join(chains))
    return path, chain, struc.get_residue_count(atoms[atoms.chain_id == chain])


def load_inputs(sequence: str | None = None, fasta=None, dms_csv=None, pdb=None,
                chain: str | None = None, name: str | None = None) -> ProteinInputs:
    """Check everything the user gave and return a ``ProteinInputs``.

    Parameters
    ----------
    sequence : pasted one-letter sequence or FASTA text (wins over ``fasta``); blank = not given.
    fasta : path of a one-record FASTA file (plain or .gz).
    dms_csv : optional ProteinGym-format assay of this sequence (1-based ``mutant`` strings).
    pdb, chain : optional structure file and chain (``None``: first chain with amino acids).
    name : label for tables and figures (default: the FASTA header's first word).

    Raises
    ------
    ValueError with a one-line message naming the first problem found.
    """
    label, seq = read_protein(sequence, fasta)
    dms_path, n_variants = check_dms(dms_csv, seq) if not _blank(dms_csv) else (None, 0)
    pdb_path, chain_id, n_res = check_pdb(pdb, chain) if not _blank(pdb) else (None, None, 0)
    return ProteinInputs(name=name or label, sequence=seq, dms_csv=dms_path, n_variants=n_variants,
                         pdb=pdb_path, chain=chain_id, n_structure_residues=n_res)


def validate_inputs(**kwargs) -> str:
    """``load_inputs(**kwargs)``'s one-line problem message, or ``""`` when the inputs are fine."""
    try:
        load_inputs(**kwargs)
    except ValueError as err:
        return str(err)
    return ""
