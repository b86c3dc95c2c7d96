"""Leakage filter at corpus scale: which training sequences resemble an evaluation protein.

A training sequence is *similar* to a group of evaluation proteins when it shares any exact 20-mer with
them, or at least three 12-mers (counted over the training sequence's positions). The evaluation k-mers
are held in one sorted index (``numpy`` arrays, with a bit per evaluation group), so 500,000 training
sequences are checked in one vectorised pass over their residues, not in pairwise loops.

12-mers are packed exactly into 60-bit integers (5 bits per residue). A 20-mer is keyed by a 64-bit hash
of the two exact 12-mers at its offsets 0 and 8 (which together cover it): distinct 20-mers can collide
with probability about 2^-64 per pair, which could only remove a sequence, never keep a similar one.
Every letter has its own code (so a shared 20-mer holding an ``X`` counts too); windows across the
separator between two sequences, or over a character that is not a letter, are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tttlab.common.sequences import STANDARD_AA

_BAD = 31  # code of the separator between sequences and of any non-letter
_LETTERS = STANDARD_AA + "".join(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in STANDARD_AA)
_LUT = np.full(256, _BAD, dtype=np.uint8)
for _i, _a in enumerate(_LETTERS):  # every letter has its own code (X, U, ... included)
    _LUT[ord(_a)] = _i
    _LUT[ord(_a.lower())] = _i
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _codes(seqs: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Residue codes of ``seqs`` joined with separators; start offsets and lengths."""
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    starts = np.zeros(len(seqs), dtype=np.int64)
    np.cumsum(lengths[:-1] + 1, out=starts[1:])
    joined = "\n".join(seqs).encode("ascii", errors="replace")
    return _LUT[np.frombuffer(joined, dtype=np.uint8)], starts, lengths


def _keys12(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact 12-mer keys at every window start and whether the window lies inside one sequence."""
    n = len(codes) - 11
    if n <= 0:
        return np.zeros(0, np.uint64), np.zeros(0, bool)
    keys = np.zeros(n, dtype=np.uint64)
    for j in range(12):
        keys <<= np.uint64(5)
        keys |= codes[j:j + n].astype(np.uint64)
    bad = np.concatenate([[0], np.cumsum(codes == _BAD)])
    return keys, (bad[12:12 + n] - bad[:n]) == 0


def window_keys(codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(keys, valid) of every window of length ``k`` (12 or 20) starting at each position."""
    keys12, valid12 = _keys12(codes)
    if k == 12:
        return keys12, valid12
    if k != 20:
        raise ValueError(f"k must be 12 or 20, not {k}")
    n = len(codes) - 19
    if n <= 0:
        return np.zeros(0, np.uint64), np.zeros(0, bool)
    with np.errstate(over="ignore"):
        keys = (keys12[:n] * _MIX) ^ keys12[8:8 + n]
    return keys, valid12[:n] & valid12[8:8 + n]


@dataclass
class KmerIndex:
    """Sorted unique evaluation k-mer keys, each with a bit mask of the groups that hold it."""

    k: int
    keys: np.ndarray  # sorted unique uint64
    groups: np.ndarray  # uint32 bit mask per key
    _filter: np.ndarray | None = None  # bool per hash bucket: may any key fall there

    _FILTER_BITS = 26

    def _buckets(self, keys: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return (keys * _MIX) >> np.uint64(64 - self._FILTER_BITS)

    @classmethod
    def build(cls, groups: list[list[str]], k: int) -> "KmerIndex":
        """Index the k-mers of each group of sequences (group i sets bit i; at most 32 groups)."""
        if len(groups) > 32:
            raise ValueError("at most 32 evaluation groups")
        all_keys, all_bits = [], []
        for bit, seqs in enumerate(groups):
            if not seqs:
                continue
            codes, _, _ = _codes(list(seqs))
            keys, valid = window_keys(codes, k)
            keys = np.unique(keys[valid])
            all_keys.append(keys)
            all_bits.append(np.full(len(keys), 1 << bit, dtype=np.uint32))
        if not all_keys:
            return cls(k, np.zeros(0, np.uint64), np.zeros(0, np.uint32))
        keys = np.concatenate(all_keys)
        bits = np.concatenate(all_bits)
        order = np.argsort(keys, kind="stable")
        keys, bits = keys[order], bits[order]
        first = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
        return cls(k, keys[first], np.bitwise_or.reduceat(bits, first))

    def lookup(self, keys: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Group bit mask of each key (0 where absent or invalid)."""
        out = np.zeros(len(keys), np.uint32)
        if len(self.keys) == 0:
            return out
        if self._filter is None:  # a one-sided hash filter: most query keys miss it and skip the search
            self._filter = np.zeros(1 << self._FILTER_BITS, dtype=bool)
            self._filter[self._buckets(self.keys)] = True
        cand = np.flatnonzero(self._filter[self._buckets(keys)] & valid)
        pos = np.searchsorted(self.keys, keys[cand]).clip(max=len(self.keys) - 1)
        found = self.keys[pos] == keys[cand]
        out[cand[found]] = self.groups[pos[found]]
        return out


def shared_kmer_counts(seqs: list[str], index: KmerIndex, n_groups: int,
                       chunk_residues: int = 20_000_000) -> np.ndarray:
    """(len(seqs) x n_groups) counts of each sequence's window positions whose k-mer is in a group."""
    out = np.zeros((len(seqs), n_groups), dtype=np.int64)
    i = 0
    while i < len(seqs):
        j, size = i, 0
        while j < len(seqs) and (size == 0 or size + len(seqs[j]) <= chunk_residues):
            size += len(seqs[j]) + 1
            j += 1
        codes, starts, lengths = _codes(seqs[i:j])
        keys, valid = window_keys(codes, index.k)
        mask = index.lookup(keys, valid)
        where = np.flatnonzero(mask)  # hits are sparse: count them per sequence, not per position
        owner = np.searchsorted(starts, where, side="right") - 1
        for g in range(n_groups):
            in_group = ((mask[where] >> np.uint32(g)) & np.uint32(1)).astype(bool)
            out[i:j, g] = np.bincount(owner[in_group], minlength=j - i)
        i = j
    return out


def similar_to(seqs: list[str], groups: list[list[str]], exact_k: int = 20, homology_k: int = 12,
               homology_hits: int = 3) -> np.ndarray:
    """(len(seqs) x len(groups)) boolean: sequence shares an exact ``exact_k``-mer, or at least
    ``homology_hits`` ``homology_k``-mers, with the proteins of a group (the v1 rule by default)."""
    if (exact_k, homology_k) != (20, 12):
        raise ValueError("the index supports exact_k=20 and homology_k=12")
    exact = shared_kmer_counts(seqs, KmerIndex.build(groups, 20), len(groups)) > 0
    homol = shared_kmer_counts(seqs, KmerIndex.build(groups, 12), len(groups)) >= homology_hits
    return exact | homol


def shares_exact_kmer(seqs: list[str], others: list[str], k: int = 20) -> np.ndarray:
    """Boolean per sequence: shares at least one exact ``k``-mer (12 or 20) with ``others``."""
    return shared_kmer_counts(seqs, KmerIndex.build([others], k), 1)[:, 0] > 0
