"""Experimental structures as contact targets: a PDB chain read with biotite (first model, heavy
atoms, first altloc), aligned position by position to the sequence a model reads (the chain itself,
or a DMS wild type through ``dms_structure_map.csv``), and its true contacts (C-beta < 8 A, C-alpha
for glycine, as in Rao et al. 2021). Also the fixed train/test split of the 40 pfam40 domains.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tttlab.data import registry as data
from tttlab.data.fasta import read_fasta
from tttlab.common.sequences import check_sequence

CUTOFF = 8.0  #: Angstrom, C-beta to C-beta (C-alpha for glycine)
MAX_CA_CA = 4.2  #: Angstrom; consecutive C-alphas further apart mark a chain break
DMS_MAP = "structures/dms_targets/dms_structure_map.csv"


@dataclass
class Target:
    """A protein sequence aligned, position by position, to an experimental structure.

    ``coords`` holds one point per sequence position (C-beta, C-alpha for glycine; NaN where the
    structure has no such atom), ``residues`` the PDB residue (number + insertion code, ``""``
    where none), ``identity`` the fraction of aligned positions whose residue type matches.
    """

    id: str
    sequence: str
    coords: np.ndarray
    residues: list[str]
    source: str = ""
    identity: float = 1.0
    atoms: object = field(default=None, repr=False)

    @property
    def length(self) -> int:
        return len(self.sequence)

    def contacts(self, cutoff: float = CUTOFF) -> np.ndarray:
        """L x L true contacts: 1.0 contact, 0.0 none, NaN where a position has no coordinate."""
        return contact_map(self.coords, cutoff)

    def pdb_text(self) -> str:
        """The chain (first model, heavy atoms) as PDB text, e.g. for a 3D viewer."""
        return pdb_text(self.atoms)


def pdb_text(atoms) -> str:
    """biotite atoms as PDB text (e.g. for a 3D viewer)."""
    import io

    import biotite.structure.io.pdb as pdb

    out, handle = pdb.PDBFile(), io.StringIO()
    out.set_structure(atoms)
    out.write(handle)
    return handle.getvalue()


def contact_map(coords: np.ndarray, cutoff: float = CUTOFF) -> np.ndarray:
    """L x L map from L x 3 points: 1.0 where closer than ``cutoff``, NaN where unknown."""
    dist = np.linalg.norm(coords[:, None, :] - coords[None, :, :], axis=-1)
    out = (dist < cutoff).astype(float)
    out[np.isnan(dist)] = np.nan
    return out


def read_chain(pdb_path, chain: str | None = None):
    """Protein heavy atoms of one chain (first model, first altloc) and the chain id.

    Reads PDB or mmCIF (by extension). ``chain=None`` takes the first protein chain. Raises
    ``FileNotFoundError`` for a missing file and a one-line ``ValueError`` for an unreadable file
    or a missing chain.
    """
    import biotite.structure as struc
    import biotite.structure.io as strucio

    pdb_path = Path(pdb_path)
    if not pdb_path.is_file():
        raise FileNotFoundError(f"structure file not found: {pdb_path}")
    try:
        atoms = strucio.load_structure(str(pdb_path), model=1, altloc="first")
    except Exception as err:  # biotite raises several types for malformed files
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot read {pdb_path.name} as a structure file: {msg}") from None
    atoms = atoms[struc.filter_amino_acids(atoms) & ~np.isin(atoms.element, ("H", "D"))]
    chains = list(dict.fromkeys(atoms.chain_id.tolist()))
    if not chains:
        raise ValueError(f"{pdb_path.name}: no protein residues found")
    chain = chains[0] if chain is None else chain
    if chain not in chains:
        raise ValueError(f"{pdb_path.name}: no protein chain {chain!r} "
                         f"(chains: {', '.join(chains)})")
    return atoms[atoms.chain_id == chain], chain


def chain_residues(atoms) -> list[dict]:
    """One dict per residue (residue number + insertion code kept apart): ``label``, ``number``,
    ``letter`` (X if non-standard), ``point`` (C-beta; C-alpha for glycine, or for every residue
    of a chain without any C-beta, with a warning; NaN if absent), ``ca``.
    """
    import biotite.structure as struc
    import biotite.structure.info as info

    from tttlab.common.sequences import STANDARD_AA

    starts = list(struc.get_residue_starts(atoms)) + [atoms.array_length()]
    nan = np.full(3, np.nan)
    ca_only = bool((atoms.atom_name == "CA").any()) and not (atoms.atom_name == "CB").any()
    if ca_only:  # a C-alpha trace (coarse models, some cryo-EM chains): contacts from C-alpha
        import warnings

        warnings.warn("the chain has no C-beta atoms (a C-alpha-only model?): contacts are taken "
                      "between C-alpha atoms instead", stacklevel=2)
    out = []
    for start, stop in zip(starts[:-1], starts[1:]):
        res = atoms[start:stop]
        name = str(res.res_name[0])
        letter = info.one_letter_code(name) or "X"
        ca = res.coord[res.atom_name == "CA"]
        cb = res.coord[res.atom_name == "CB"]
        point = cb[0] if len(cb) else (ca[0] if (name == "GLY" or ca_only) and len(ca) else nan)
        out.append({"label": f"{res.res_id[0]}{res.ins_code[0]}", "number": int(res.res_id[0]),
                    "letter": letter if letter in STANDARD_AA else "X",
                    "point": np.asarray(point, dtype=float),
                    "ca": np.asarray(ca[0], dtype=float) if len(ca) else nan})
    return out


def read_pdb_target(pdb_path, chain: str | None = None) -> Target:
    """The chain's own sequence and geometry: observed residues in file order; where consecutive
    C-alphas are more than 4.2 A apart and the numbering skips, one X per missing residue."""
    atoms, chain = read_chain(pdb_path, chain)
    seq, points, labels, prev = [], [], [], None
    for res in chain_residues(atoms):
        if prev is not None:
            missing = res["number"] - prev["number"] - 1
            if missing > 0 and np.linalg.norm(res["ca"] - prev["ca"]) > MAX_CA_CA:
                seq += ["X"] * missing
                points += [np.full(3, np.nan)] * missing
                labels += [""] * missing
        seq.append(res["letter"])
        points.append(res["point"])
        labels.append(res["label"])
        prev = res
    name = Path(pdb_path).stem
    return Target(id=name, sequence="".join(seq), coords=np.array(points), residues=labels,
                  source=f"{Path(pdb_path).name}:{chain}", atoms=atoms)


def _dms_row(dms_id: str):
    import pandas as pd

    table = pd.read_csv(data.path(DMS_MAP))
    row = table[table.dms_id == dms_id]
    if row.empty:
        raise ValueError(f"{dms_id}: neither a structure file nor a DMS id of {DMS_MAP} "
                         f"(known: {', '.join(table.dms_id)})")
    return row.iloc[0]


def _global_alignment(seq: str, chain_seq: str):
    """The best global alignment of two sequences: BLOSUM62, gaps -10/-1, free end gaps."""
    import biotite.sequence as bseq
    import biotite.sequence.align as align

    matrix = align.SubstitutionMatrix.std_protein_matrix()
    return align.align_optimal(bseq.ProteinSequence(seq), bseq.ProteinSequence(chain_seq), matrix,
                               gap_penalty=(-10, -1), terminal_penalty=False, max_number=1)[0]


def align_to_chain(seq: str, residues: list[dict]) -> list[tuple[int, int]]:
    """(sequence index, residue index) pairs of a global alignment of ``seq`` to the chain's
    residues (``chain_residues``): BLOSUM62, gaps -10/-1, free end gaps (a homolog works)."""
    best = _global_alignment(seq, "".join(r["letter"] for r in residues))
    return [(int(a), int(b)) for a, b in best.trace if a >= 0 and b >= 0]


def alignment_zscore(seq: str, chain_seq: str, shuffles: int = 20, seed: int = 0) -> float:
    """How far the alignment score of ``seq`` and ``chain_seq`` lies above those of ``shuffles``
    shuffles of ``chain_seq`` (same composition, no order), in standard deviations. With free end
    gaps two unrelated proteins still align short stretches at high identity; their z-score stays
    low (on the 48 shared structures' chains against each other: median 0, 99th percentile 4, max
    4.8 of 150 pairs) while the DMS wild types score 40-170 against their structures, the homolog
    PABP/PABPC1 at 66 % identity 40."""
    import random

    rng = random.Random(seed)
    score = _global_alignment(seq, chain_seq).score
    letters = list(chain_seq)
    null = []
    for _ in range(shuffles):
        rng.shuffle(letters)
        null.append(_global_alignment(seq, "".join(letters)).score)
    spread = float(np.std(null)) or 1.0
    return (score - float(np.mean(null))) / spread


def _aligned_pairs(seq: str, residues: list[dict], offset) -> list[tuple[int, int]]:
    """(sequence index, residue index) pairs: a constant numbering offset, or ``align_to_chain``
    when the map says the offset varies (a homolog)."""
    if str(offset).lstrip("-").isdigit():
        index = {r["label"]: k for k, r in enumerate(residues)}
        return [(i, index[str(i + 1 + int(offset))]) for i in range(len(seq))
                if str(i + 1 + int(offset)) in index]
    return align_to_chain(seq, residues)


def place_residues(seq: str, residues: list[dict], pairs) -> tuple[np.ndarray, list[str]]:
    """Coordinates (L x 3; NaN where no residue aligns) and PDB residue labels ("" there) of the
    structure ``residues`` put at the sequence positions ``pairs`` (sequence index, residue
    index)."""
    coords = np.full((len(seq), 3), np.nan)
    labels = [""] * len(seq)
    for i, k in pairs:
        coords[i], labels[i] = residues[k]["point"], residues[k]["label"]
    return coords, labels


def dms_target(dms_id: str) -> Target:
    """The DMS wild type (``dms/<id>.wt.fasta``) aligned to its structure through
    ``dms_structure_map.csv``; every residue-type mismatch must be one the map lists."""
    row = _dms_row(dms_id)
    seq = check_sequence(read_fasta(data.path(f"dms/{dms_id}.wt.fasta"))[0][1], dms_id)
    atoms, chain = read_chain(data.path(f"structures/dms_targets/{row.pdb_file}"), row.chain)
    residues = chain_residues(atoms)
    pairs = _aligned_pairs(seq, residues, row.pdb_resnum_minus_wt_pos)
    found = {f"{seq[i]}{i + 1}{residues[k]['letter']}(pdb {residues[k]['label']})"
             for i, k in pairs if seq[i] != residues[k]["letter"]}
    listed = set(str(row.mismatches).split(";")) - {"nan", ""}
    if found != listed or len(pairs) != int(row.aligned_pairs):
        raise ValueError(f"{dms_id}: sequence-structure alignment ({len(pairs)} pairs, mismatches "
                         f"{sorted(found)}) differs from {DMS_MAP}")
    coords, labels = place_residues(seq, residues, pairs)
    return Target(id=dms_id, sequence=seq, coords=coords, residues=labels,
                  source=f"{row.pdb_file}:{chain}", identity=1 - len(found) / len(pairs),
                  atoms=atoms)


def load_target(pdb_or_id, chain: str | None = None) -> Target:
    """A ``Target`` from a PDB/mmCIF path, a DMS id of ``dms_structure_map.csv``, or a Target."""
    if isinstance(pdb_or_id, Target):
        return pdb_or_id
    name = str(pdb_or_id)
    is_file = name.lower().endswith((".pdb", ".ent", ".cif", ".bcif")) or Path(name).exists()
    if not is_file and "/" not in name:
        return dms_target(name)
    return read_pdb_target(name, chain)


def pair_indices(true: np.ndarray, min_sep: int, max_sep: int | None = None):
    """Upper-triangle pairs (i, j) with ``min_sep <= j - i <= max_sep`` and a known truth."""
    i, j = np.triu_indices(true.shape[0], k=min_sep)
    keep = ~np.isnan(true[i, j])
    if max_sep is not None:
        keep &= (j - i) <= max_sep
    return i[keep], j[keep]


# ------------------------------------------------------------------ the pfam40 split
#: fixed split of the 40 pfam40 chains: sorted by SHA-256 of the 4-letter PDB id, first 20 train
#: (``pfam40_split`` recomputes it from ``domains.csv``; a test checks both agree)
PFAM40_TRAIN = ("1BXY_A", "1CTF_A", "1FB0_A", "1FQT_A", "1GN0_A", "1GUU_A", "1MVO_A", "1T8K_A",
                "1TEN_A", "1U2H_A", "1UCS_A", "1Z2U_A", "2A0B_A", "2BWF_A", "2EVB_A", "2O37_A",
                "2PND_A", "2QLC_A", "3GQS_A", "3GVA_A")
PFAM40_TEST = ("1AQT_A", "1CZP_A", "1JL3_A", "1OAP_A", "1PTF_A", "1TZV_A", "1UNQ_A", "1WVN_A",
               "2H3L_A", "2O9S_A", "2PPN_A", "2X1B_A", "2Z3V_A", "2ZXJ_A", "3BR8_A", "3F04_A",
               "3FYM_A", "3I2Z_A", "3JVL_A", "3MQI_A")


def pfam40_split() -> dict[str, list[str]]:
    """``{"train": [...], "test": [...]}`` chain names (e.g. ``1AQT_A``): the 40 PDB ids of
    ``structures/pfam40/domains.csv`` sorted by their SHA-256 hex digest; the first 20 train."""
    import pandas as pd

    table = pd.read_csv(data.path("structures/pfam40/domains.csv"), comment="#", header=None)
    ids = [str(x).strip() for x in table[3]]
    ranked = sorted(ids, key=lambda pdb_id: hashlib.sha256(pdb_id.encode()).hexdigest())
    return {"train": sorted(f"{x}_A" for x in ranked[:20]),
            "test": sorted(f"{x}_A" for x in ranked[20:])}


def pfam40_path(name: str) -> Path:
    """Path of ``structures/pfam40/<name>.pdb``."""
    return data.path(f"structures/pfam40/{name}.pdb")
