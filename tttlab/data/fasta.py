"""FASTA: the one reader of plain and gzipped FASTA files and FASTA text."""

from __future__ import annotations

import gzip


def parse_fasta(lines, source: str | None = None) -> list[tuple[str, str]]:
    """(header, sequence) pairs from FASTA ``lines``. Text before the first ``>`` header is
    skipped, or with ``source`` (a name for messages) refused with a one-line ``ValueError``."""
    records, header, chunks = [], None, []
    for line in lines:
        line = line.strip()
        if line.startswith(">"):
            if header is not None:
                records.append((header, "".join(chunks)))
            header, chunks = line[1:].strip(), []
        elif line:
            if header is None:
                if source is not None:
                    raise ValueError(f"{source}: text before the first '>' header line")
                continue
            chunks.append(line)
    if header is not None:
        records.append((header, "".join(chunks)))
    return records


def read_fasta(path) -> list[tuple[str, str]]:
    """(header, sequence) pairs of a plain or gzipped FASTA file (a UTF-8 byte-order mark is
    skipped, so the first record is not lost)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig") as handle:
        return parse_fasta(handle)
