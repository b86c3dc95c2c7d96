"""``HomologSet``: the homologs a TTT run adapts on besides its target, as the engine takes them
(``engine.homologs``) and the data layer builds them (``data.homologs``: MSA files, searches)."""

from __future__ import annotations

from dataclasses import dataclass

from tttlab.common.sequences import check_sequence


@dataclass(frozen=True)
class HomologSet:
    """Sequences to adapt on besides the target: unaligned homologs (gaps removed, upper case),
    one weight each (any positive scale) and where they came from (file, search, list)."""

    sequences: tuple[str, ...]
    weights: tuple[float, ...]
    source: str = "list"

    def __post_init__(self):
        if len(self.sequences) != len(self.weights):
            raise ValueError(f"{len(self.sequences)} homologs but {len(self.weights)} weights")
        if any(not w > 0 for w in self.weights):
            raise ValueError("homolog weights must be positive")

    def __len__(self) -> int:
        return len(self.sequences)

    @classmethod
    def of(cls, homologs) -> "HomologSet":
        """A ``HomologSet`` as is, or one from a list of sequences (equal weights)."""
        if isinstance(homologs, HomologSet):
            return homologs
        if isinstance(homologs, (str, bytes)) or not hasattr(homologs, "__iter__"):
            raise TypeError("homologs must be a HomologSet or a list of sequences; resolve an MSA "
                            "file or 'auto' with tttlab.homologs(sequence, source)")
        seqs = tuple(check_sequence(s, f"homolog {i + 1}") for i, s in enumerate(homologs))
        return cls(seqs, (1.0,) * len(seqs), "list")
