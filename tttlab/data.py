"""Data registry (placeholder until the data-registry issue lands): resolve project data by name."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """``TTTLAB_DATA_DIR`` when set, else ``../shared/data`` beside the repository."""
    env = os.environ.get("TTTLAB_DATA_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def path(name: str) -> Path:
    """Path of a registered file, e.g. ``path("dms/BLAT_ECOLX_Stiffler_2015.wt.fasta")``."""
    p = data_dir() / name
    if not p.exists():
        raise FileNotFoundError(f"{name}: not found under {data_dir()}")
    return p


def read_fasta(path) -> list[tuple[str, str]]:
    """(header, sequence) pairs of a plain or gzipped FASTA file."""
    opener = gzip.open if str(path).endswith(".gz") else open
    records, header, chunks = [], None, []
    with opener(path, "rt") as handle:
        for line in handle:
            line = line.strip()
            if line.startswith(">"):
                if header is not None:
                    records.append((header, "".join(chunks)))
                header, chunks = line[1:], []
            elif line:
                chunks.append(line)
    if header is not None:
        records.append((header, "".join(chunks)))
    return records
