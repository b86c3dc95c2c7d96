"""Multiple sequence alignments: A3M (a small reader here), A2M, aligned FASTA and Stockholm
(pyhmmer's ``MSAFile``), plain or gzipped, format from the suffix or the content.

Every format becomes one ``Alignment``: per row an id, the row in the query's columns (``aligned``:
upper case and ``-``, one character per query column when the query is the first row) and the
unaligned sequence (every residue, insertions included, gaps removed, upper case).
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path

from tttlab.data.fasta import parse_fasta

FORMATS = ("a3m", "a2m", "afa", "stockholm")
_SUFFIXES = {".a3m": "a3m", ".a2m": "a2m", ".sto": "stockholm", ".stk": "stockholm",
             ".stockholm": "stockholm", ".afa": "afa", ".fasta": "afa", ".fa": "afa",
             ".aln": "afa", ".faa": "afa"}
_RESIDUES = set("ACDEFGHIKLMNPQRSTVWYXBZUO")
_GAPS = set("-.")


@dataclass(frozen=True)
class Alignment:
    """Rows of an MSA: ``ids``, ``aligned`` rows (one column per match column: upper case and
    ``-``) and ``sequences`` (unaligned, upper case), the file's ``format`` and ``source``."""

    ids: tuple[str, ...]
    aligned: tuple[str, ...]
    sequences: tuple[str, ...]
    format: str
    source: str

    def __len__(self) -> int:
        return len(self.ids)


def detect_format(path: Path, head: bytes) -> str:
    """The format from the suffix (``.gz`` ignored), else from the first bytes."""
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    suffix = Path(name).suffix.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    text = head.lstrip()
    if text.startswith(b"# STOCKHOLM"):
        return "stockholm"
    if text.startswith(b"#"):  # ColabFold's A3M starts with "#<query length>\t<copies>"
        text = text.split(b"\n", 1)[-1].lstrip()
    if text.startswith(b">"):
        body = b"".join(line for line in text.splitlines()[1:40] if not line.startswith(b">"))
        return "a3m" if any(97 <= c <= 122 for c in body) else "afa"
    raise ValueError(f"{path}: not an MSA (expected A3M, A2M, aligned FASTA or Stockholm)")


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: cannot read ({err})") from None
    if not data.strip():
        raise ValueError(f"{path}: empty file")
    if b"\x00" in data[:4096]:
        raise ValueError(f"{path}: binary file, not an MSA")
    return data


def _check_letters(path, ident, row):
    bad = set(row.upper()) - _RESIDUES - _GAPS
    if bad:
        raise ValueError(f"{path}: row {ident!r} holds non-amino-acid characters "
                         f"{''.join(sorted(bad))[:10]!r}")


def _a3m(path: Path, data: bytes):
    """A3M: FASTA records; upper case and ``-`` are match columns, lower case letters are
    insertions (absent from other rows), ``.`` is ignored; ``#`` comment lines (ColabFold writes
    ``#<query length>\t<copies>`` first) are skipped."""
    lines = [ln for ln in data.decode("utf-8-sig", "replace").splitlines() if not ln.startswith("#")]
    records = parse_fasta(lines, str(path))
    ids, aligned, seqs = [], [], []
    for header, row in records:
        ident = header.split()[0] if header.split() else f"row{len(ids) + 1}"
        _check_letters(path, ident, row)
        ids.append(ident)
        aligned.append("".join(c for c in row if c.isupper() or c == "-"))
        seqs.append("".join(c for c in row if c.isalpha()).upper())
    return ids, aligned, seqs


def _pyhmmer(path: Path, data: bytes, fmt: str):
    """A2M, aligned FASTA and Stockholm through pyhmmer's ``MSAFile`` (text mode); match columns
    are the first row's residues when it is the query, else every column."""
    from pyhmmer import easel

    try:
        with easel.MSAFile(io.BytesIO(data), format=fmt) as handle:
            msa = handle.read()
    except (ValueError, EOFError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a valid {fmt} alignment ({first[:160]})") from None
    if msa is None:
        raise ValueError(f"{path}: no alignment in the file")
    ids = [n.decode() if isinstance(n, bytes) else str(n) for n in msa.names]
    rows = [str(r) for r in msa.alignment]
    for ident, row in zip(ids, rows):
        _check_letters(path, ident, row)
    seqs = ["".join(c for c in row if c.isalpha()).upper() for row in rows]
    return ids, [r.upper().replace(".", "-") for r in rows], seqs


def read_msa(path, format: str | None = None) -> Alignment:
    """Read an MSA file (``format`` one of ``FORMATS``; default: from the suffix or content).

    A bad file (missing, empty, binary, rows of mixed lengths, non-amino-acid letters, an
    unreadable structure) is a one-line ``ValueError`` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MSA file not found: {path}")
    data = _read_bytes(path)
    fmt = format or detect_format(path, data[:65536])
    if fmt not in FORMATS:
        raise ValueError(f"unknown MSA format {fmt!r}: use one of {', '.join(FORMATS)}")
    ids, aligned, seqs = _a3m(path, data) if fmt == "a3m" else _pyhmmer(path, data, fmt)
    if not ids:
        raise ValueError(f"{path}: no sequences")
    widths = {len(a) for a in aligned}
    if len(widths) > 1:
        raise ValueError(f"{path}: rows of different aligned lengths ({min(widths)} to "
                         f"{max(widths)} match columns); is it really {fmt}?")
    return Alignment(tuple(ids), tuple(aligned), tuple(seqs), fmt, str(path))
