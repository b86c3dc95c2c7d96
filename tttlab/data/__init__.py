"""Data layer: the registry of every data file (name, hash, licence, source; fetch or rebuild) and
the readers of outside formats (FASTA, DMS tables, PDB chains, BLAST databases). It imports
nothing from the engine, the studies or the command line.

The short names below are the ones notebooks use: ``tttlab.data.path("dms/...")``.
"""

from tttlab.data.fasta import parse_fasta, read_fasta
from tttlab.data.registry import (cache_dir, data_dir, dms_assays, dms_files, entry, locate, path,
                                  sha256sum, structure_files)

__all__ = ["cache_dir", "data_dir", "dms_assays", "dms_files", "entry", "locate", "parse_fasta",
           "path", "read_fasta", "sha256sum", "structure_files"]
