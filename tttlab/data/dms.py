"""Deep mutational scanning (DMS) tables in ProteinGym format (Notin et al., NeurIPS 2023):
reading, validation with one-line errors or an explicit report of dropped rows, wild-type
inference, and the shared assays' ids. ``mutant`` strings look like ``A24C:D30N`` (1-based).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from tttlab.common.sequences import STANDARD_AA

#: the assays in the shared data folder (``tttlab.data.path("dms/<id>.csv.gz")``)
SHORT_SINGLES = ("SPG1_STRSG_Olson_2014_singles", "RL40A_YEAST_Roscoe_2013",
                 "RL40A_YEAST_Roscoe_2014", "IF1_ECOLI_Kelsic_2016", "PABP_YEAST_Melamed_2013",
                 "DLG4_RAT_McLaughlin_2012", "SUMO1_HUMAN_Weile_2017")
LONGER_SINGLES = ("UBC9_HUMAN_Weile_2017", "BLAT_ECOLX_Stiffler_2015")
MULTI_MUTANTS = ("SPG1_STRSG_Olson_2014", "TADBP_HUMAN_Bolognesi_2019", "A4_HUMAN_Seuma_2022")
SHARED_ASSAYS = SHORT_SINGLES + LONGER_SINGLES + MULTI_MUTANTS

_AA = f"[{STANDARD_AA}]"
_MUTANT = re.compile(rf"^{_AA}[1-9]\d*{_AA}(:{_AA}[1-9]\d*{_AA})*$")


# --------------------------------------------------------------------------- loading
@dataclass
class DMSAssay:
    """A validated DMS table and its wild type.

    ``table`` has ``mutant``, ``DMS_score``, ``n_mutations`` (and the file's other columns), one
    row per variant; ``dropped`` lists rows removed by ``load_dms(..., drop_invalid=True)``
    (``line`` in the file, ``mutant``, ``reason``); ``n_total``: valid rows before subsampling.
    """

    name: str
    wild_type: str
    table: pd.DataFrame
    dropped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=["line", "mutant", "reason"]))
    wt_source: str = "FASTA"
    n_total: int = 0

    def __len__(self) -> int:
        return len(self.table)

    def subsample(self, max_variants: int | None, seed: int = 0) -> DMSAssay:
        """At most ``max_variants`` rows, drawn without replacement with a fixed seed."""
        if max_variants is None or max_variants >= len(self):
            return self
        if max_variants < 1:
            raise ValueError(f"max_variants must be >= 1, got {max_variants}")
        rows = np.sort(np.random.default_rng(seed).choice(len(self), max_variants, replace=False))
        return replace(self, table=self.table.iloc[rows].reset_index(drop=True))


def assay_path(name_or_path) -> Path:
    """A DMS file: an existing path, or a shared assay id (``"BLAT_ECOLX_Stiffler_2015"``)."""
    from tttlab.data import registry as data

    p = Path(name_or_path)
    if p.is_file():
        return p
    if p.suffix == "" and p.parent == Path(".") and f"dms/{p.name}.csv.gz" in data.registry():
        return data.path(f"dms/{p.name}.csv.gz")  # a registered assay: its own error says what to fetch
    raise FileNotFoundError(f"{name_or_path}: no such DMS file or shared assay "
                            f"(shared: {', '.join(SHARED_ASSAYS)})")


def assay_name(path) -> str:
    """``.../BLAT_ECOLX_Stiffler_2015.csv.gz`` -> ``BLAT_ECOLX_Stiffler_2015``."""
    name = Path(path).name
    for suffix in (".gz", ".csv", ".tsv"):
        name = name[: -len(suffix)] if name.endswith(suffix) else name
    return name


def _delimiter(path: Path) -> str:
    """The delimiter of a (gzipped) table: whichever of , ; TAB is most frequent in its header."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig", errors="replace") as handle:
        header = handle.readline()
    return max((",", ";", "\t"), key=header.count) if header.strip() else ","


def _read_table(path: Path) -> pd.DataFrame:
    """A DMS table with comma, semicolon or tab delimiters, spaces around them and a BOM allowed."""
    try:
        sep = _delimiter(path)
        df = pd.read_csv(path, sep=sep, skipinitialspace=True, encoding="utf-8-sig",
                         dtype={"mutant": str, "mutated_sequence": str})
    except (OSError, UnicodeDecodeError, EOFError, pd.errors.ParserError,
            pd.errors.EmptyDataError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path.name}: cannot read as CSV ({first})") from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


STOP = "stop codon: nonsense variant, not scored (ProteinGym scores substitutions only)"


def _bytes(strings, width: int) -> np.ndarray:
    """N x width uint8 array of equal-length ASCII strings."""
    joined = "".join(strings).encode("ascii", errors="replace")
    return np.frombuffer(joined, np.uint8).reshape(len(strings), width).copy()


def _codes(letters) -> np.ndarray:
    return np.frombuffer("".join(letters).encode("ascii", errors="replace"), np.uint8)


def _substitutions(rows: np.ndarray, mutants: np.ndarray) -> pd.DataFrame:
    """One row per substitution of well-formed mutants: row, pos (1-based), wt and mt (ASCII)."""
    parts = [m.split(":") for m in mutants[rows]]
    flat = [p for ps in parts for p in ps]
    return pd.DataFrame({"row": np.repeat(rows, [len(p) for p in parts]).astype(int),
                         "pos": np.fromiter((int(p[1:-1]) for p in flat), int, len(flat)),
                         "wt": _codes(p[0] for p in flat), "mt": _codes(p[-1] for p in flat)})


def load_dms(dms_path, wt_fasta=None, drop_invalid: bool = False) -> DMSAssay:
    """Read and validate a ProteinGym-format DMS file (.csv or .csv.gz).

    Parameters
    ----------
    dms_path : file path, or a shared assay id (see ``SHARED_ASSAYS``).
    wt_fasta : FASTA file with the wild type (first record). Without it the wild type is inferred
        from ``mutated_sequence``: each row's substitutions are undone and the per-position
        consensus is taken; every row is then checked against it.
    drop_invalid : drop invalid rows and list them in ``DMSAssay.dropped`` instead of raising.

    Returns
    -------
    DMSAssay. Invalid rows (malformed mutant, missing or non-numeric score, duplicated variant,
    wild-type mismatch, ``mutated_sequence`` or ``n_mutations`` disagreeing with the mutant) raise
    a one-line ``ValueError`` naming the first such line, unless ``drop_invalid``; of duplicated
    variants the first is kept. Stop-codon variants (``L10*``) are always dropped and listed.
    """
    path = assay_path(dms_path)
    name = assay_name(path)
    df = _read_table(path)
    _check_columns(df, name, wt_fasta is not None)
    mutants = np.array([m.strip() if isinstance(m, str) else "" for m in df["mutant"].tolist()],
                       dtype=object)
    scores = pd.to_numeric(df["DMS_score"], errors="coerce").to_numpy(float)
    reasons = _Reasons(len(df))
    subs = _flag_malformed_rows(reasons, mutants, scores)
    seqs = None
    if "mutated_sequence" in df.columns:
        seqs = np.array([s.strip().upper() if isinstance(s, str) else ""
                         for s in df["mutated_sequence"].tolist()], object)
    if wt_fasta is not None:
        wild_type, source = _wild_type_from_fasta(wt_fasta), "FASTA"
    else:
        wild_type, source = _consensus_wild_type(reasons, subs, seqs, mutants, name), "inferred"
    n_mut = _flag_wild_type_disagreements(reasons, subs, wild_type, source, df, seqs)
    reason, idx = reasons.reason, np.arange(len(df))
    invalid = (reason != None) & (reason != STOP)  # noqa: E711
    if invalid.any() and not drop_invalid:
        raise ValueError(_first_problem(np.where(invalid, reason, None), mutants, name))
    keep = reason == None  # noqa: E711
    if not keep.any():
        raise ValueError(f"{name}: no valid rows ({_first_problem(reason, mutants, name)})")
    dropped = pd.DataFrame({"line": idx[~keep] + 2, "mutant": mutants[~keep],
                            "reason": reason[~keep]})
    table = df[keep].assign(mutant=mutants[keep], DMS_score=scores[keep],
                            n_mutations=n_mut[keep]).reset_index(drop=True)
    return DMSAssay(name, wild_type, table, dropped, source, len(table))


class _Reasons:
    """Why each row of a DMS table is invalid (None: valid so far); the first reason found stays."""

    def __init__(self, n: int):
        self.reason = np.full(n, None, dtype=object)

    def ok(self) -> np.ndarray:
        """Rows still valid."""
        return np.flatnonzero(self.reason == None)  # noqa: E711 (element-wise)

    def flag(self, rows, text) -> None:
        """Mark ``rows`` invalid with ``text`` (one string, or an array indexed by row)."""
        rows = np.asarray(rows, int)
        rows = rows[self.reason[rows] == None]  # noqa: E711
        self.reason[rows] = text[rows] if isinstance(text, np.ndarray) else text


def _check_columns(df: pd.DataFrame, name: str, have_wt_fasta: bool) -> None:
    missing = [c for c in ("mutant", "DMS_score") if c not in df.columns]
    if not have_wt_fasta and "mutated_sequence" not in df.columns:
        missing.append("mutated_sequence (or give the wild-type FASTA)")
    if missing:
        found = ", ".join(map(str, list(df.columns)[:8])) or "none"
        raise ValueError(f"{name}: missing column(s) {', '.join(missing)} (found: {found}); "
                         "ProteinGym format has mutant, mutated_sequence, DMS_score")


def _flag_malformed_rows(reasons: _Reasons, mutants, scores) -> pd.DataFrame:
    """Flag stop codons, malformed mutants, missing scores, positions mutated twice and duplicated
    variants (the same substitutions in any order; the first occurrence is kept); return the
    substitutions of the rows still valid."""
    n = len(mutants)
    idx = np.arange(n)
    reasons.flag(idx[["*" in m for m in mutants]], STOP)
    reasons.flag(idx[[not _MUTANT.match(m) for m in mutants]],
                 "malformed mutant (expected e.g. A24C or A24C:D30N)")
    reasons.flag(idx[~np.isfinite(scores)], "DMS_score is missing or not a number")
    subs = _substitutions(reasons.ok(), mutants)
    reasons.flag(subs.row[subs.duplicated(["row", "pos"])], "a position is mutated twice")
    key = mutants.copy()
    for r in subs.row[subs.row.eq(subs.row.shift()) & subs.pos.le(subs.pos.shift())].unique():
        key[r] = ":".join(sorted(key[r].split(":"), key=lambda s: int(s[1:-1])))
    rows = reasons.ok()
    codes, _ = pd.factorize(key[rows])
    first = np.full(codes.max() + 1 if len(codes) else 0, n)
    np.minimum.at(first, codes, rows)
    text = np.full(n, None, dtype=object)
    text[rows] = [f"duplicate of line {f + 2}" for f in first[codes]]
    reasons.flag(rows[first[codes] != rows], text)
    return subs[np.isin(subs.row, reasons.ok())]


def _wild_type_from_fasta(wt_fasta) -> str:
    from tttlab.common.sequences import check_sequence
    from tttlab.data.fasta import read_fasta

    records = read_fasta(wt_fasta)
    if not records:
        raise ValueError(f"{wt_fasta}: no FASTA records")
    return check_sequence(records[0][1], str(wt_fasta))


def _consensus_wild_type(reasons: _Reasons, subs, seqs, mutants, name: str) -> str:
    """Undo every valid row's substitutions in ``mutated_sequence``, then take the per-position
    consensus (over the rows of the most common length)."""
    from tttlab.common.sequences import check_sequence

    rows = reasons.ok()
    lengths = np.fromiter((len(s) for s in seqs[rows]), int, len(rows))
    if not len(rows) or lengths.max() == 0:
        raise ValueError(_first_problem(reasons.reason, mutants, name))
    width = int(np.bincount(lengths).argmax())
    rows = rows[lengths == width]
    s = subs[np.isin(subs.row, rows) & (subs.pos <= width)]
    arr = _bytes(seqs[rows].tolist(), width)
    arr[np.searchsorted(rows, s.row), s.pos - 1] = s.wt
    consensus = bytes(int(np.bincount(col, minlength=256).argmax()) for col in arr.T)
    return check_sequence(consensus.decode(), f"{name}: inferred wild type")


def _flag_wild_type_disagreements(reasons: _Reasons, subs, wild_type: str, source: str, df,
                                  seqs) -> np.ndarray:
    """Flag positions beyond the wild type, wild-type letters that disagree, ``n_mutations`` that
    disagrees and ``mutated_sequence`` that is not the wild type with the mutant applied; return
    each row's number of substitutions."""
    n = len(df)
    length, wt_codes = len(wild_type), _codes(wild_type)
    reasons.flag(subs.row[subs.pos > length], f"position beyond the wild type (length {length})")
    s = subs[subs.pos <= length]
    wrong = s[wt_codes[s.pos - 1] != s.wt]
    text = np.full(n, None, dtype=object)
    text[wrong.row.to_numpy()] = [f"wild type at {p} is {wild_type[p - 1]} ({source}), "
                                  f"not {chr(w)}" for p, w in zip(wrong.pos, wrong.wt)]
    reasons.flag(wrong.row, text)
    n_mut = np.bincount(subs.row, minlength=n)
    if "n_mutations" in df.columns:
        given = pd.to_numeric(df["n_mutations"], errors="coerce").to_numpy()
        reasons.flag(np.arange(n)[given != n_mut], "n_mutations disagrees with the mutant")
    if seqs is not None:  # mutated_sequence must be the wild type with the mutant applied
        rows = reasons.ok()
        same = np.fromiter((len(x) == length for x in seqs[rows]), bool, len(rows))
        reasons.flag(rows[~same], f"mutated_sequence length is not {length}")
        rows = rows[same]
        s = subs[np.isin(subs.row, rows)]
        expected = np.tile(wt_codes, (len(rows), 1))
        expected[np.searchsorted(rows, s.row), s.pos - 1] = s.mt
        differs = (_bytes(seqs[rows].tolist(), length) != expected).any(axis=1)
        reasons.flag(rows[differs],
                     "mutated_sequence differs from the wild type with this mutant applied")
    return n_mut


def _first_problem(reason, mutants, name: str) -> str:
    bad = np.flatnonzero(reason != None)  # noqa: E711
    if not len(bad):
        return f"{name}: no rows"
    i = bad[0]
    more = f" (and {len(bad) - 1} more invalid rows)" if len(bad) > 1 else ""
    return (f"{name}: line {i + 2}, mutant {mutants[i]!r}: {reason[i]}{more}; fix the file or "
            "drop such rows with drop_invalid=True (CLI: --drop-invalid)")
