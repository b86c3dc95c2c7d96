"""Homologs of a target for family-aware TTT: from an MSA file (``data.msa``), from a list of
sequences, or found here by a local jackhmmer search (pyhmmer) of the registry's Swiss-Prot file,
cached per (target, database, settings).

Every source gives an ``engine.homologs.HomologSet``: the usable homolog sequences and their
weights. Usable: not the target's own row, not near-identical to the target (>= 95 % identity over
the target's columns: a copy of the target adds nothing), covering at least half of the target's
columns, and without letters outside the 20 amino acids and X (B, Z, U, O become X). Weights are the
usual redundancy reweighting: 1 / (number of usable rows >= 80 % identical to the row, itself
included), identity counted over the row's residues in the target's columns.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path

import numpy as np

from tttlab.common.files import atomic_write_text
from tttlab.common.sequences import check_sequence
from tttlab.data.msa import Alignment, read_msa
from tttlab.common.homolog_set import HomologSet

#: jackhmmer defaults for ``homologs="auto"``: HMMER's own inclusion E-value, three iterations
SEARCH = {"iterations": 3, "incE": 1e-3, "E": 1e-3, "max_hits": 2000}
DATABASE = "sequences/swissprot_2014_01/swissprot_2014_01.fasta.gz"
NEAR_IDENTICAL, REDUNDANT, MIN_COVERAGE = 0.95, 0.8, 0.5
#: identity range (low, high) of the rows kept by default: everything but near-copies
NOT_COPIES = (0.0, NEAR_IDENTICAL)
_AA = "ACDEFGHIKLMNPQRSTVWYX"


def _onehot(rows: list[str]) -> np.ndarray:
    """N x (L * 21) float32 one-hot of aligned rows (gaps all zero)."""
    lookup = np.full(256, -1, dtype=np.int16)
    for k, a in enumerate(_AA):
        lookup[ord(a)] = k
    codes = lookup[np.frombuffer("".join(rows).encode(), dtype=np.uint8)].reshape(len(rows), -1)
    out = np.zeros((len(rows), codes.shape[1], len(_AA)), dtype=np.float32)
    n, col = np.nonzero(codes >= 0)
    out[n, col, codes[n, col]] = 1.0
    return out.reshape(len(rows), -1)


def redundancy_weights(rows: list[str], threshold: float = REDUNDANT, exact_up_to: int = 8192,
                       seed: int = 0, block: int = 1024) -> np.ndarray:
    """1 / (rows at >= ``threshold`` identity to each row, itself included); identity = shared
    residues / the row's residues (gaps excluded), over equal-length aligned rows.

    Exact up to ``exact_up_to`` rows; above, each row's count is estimated from that many
    reference rows drawn with ``seed`` (count = 1 + (N - 1) x the share of references, other than
    the row itself, that are similar), so a 37,000-row family takes seconds, not minutes."""
    if not rows:
        return np.zeros(0)
    onehot = _onehot(rows)
    n = len(rows)
    residues = np.maximum(onehot.sum(1), 1.0)
    exact = n <= exact_up_to
    refs = np.arange(n) if exact else np.sort(
        np.random.default_rng(seed).choice(n, exact_up_to, replace=False))
    ref_matrix = onehot[refs].T
    counts = np.zeros(n)
    for first in range(0, n, block):
        similar = (onehot[first:first + block] @ ref_matrix
                   / residues[first:first + block, None]) >= threshold
        if exact:
            counts[first:first + block] = similar.sum(1)
        else:
            self_ref = np.isin(np.arange(first, min(first + block, n)), refs)
            others = similar.sum(1) - self_ref  # a row is always similar to itself
            counts[first:first + block] = 1 + (n - 1) * others / (len(refs) - self_ref)
    return 1.0 / np.maximum(counts, 1.0)


def _query_row(target: str, alignment: Alignment) -> tuple[int | None, int]:
    """Index of the row that is the target (its unaligned sequence equal to the target, or holding
    it, e.g. a full-length query around the target domain) and the target's offset in it."""
    for i, seq in enumerate(alignment.sequences[:50]):
        at = seq.find(target)
        if at >= 0:
            return i, at
    return None, 0


def _target_columns(alignment: Alignment, query: int, offset: int, length: int) -> list[int]:
    """Aligned columns holding the target's residues in the query row."""
    cols = [c for c, ch in enumerate(alignment.aligned[query]) if ch != "-"]
    return cols[offset:offset + length]


def _clean(seq: str) -> str:
    return seq.translate(str.maketrans("BZUO", "XXXX"))


def from_alignment(target: str, alignment: Alignment, region: str = "aligned",
                   identity: tuple[float, float] = NOT_COPIES) -> HomologSet:
    """The usable homologs of ``target`` in ``alignment`` (see the module docstring); ``region``
    ``"full"`` keeps each homolog's whole sequence, ``"aligned"`` its residues in the target's
    columns (gaps and insertions removed). ``identity`` = (low, high): keep the rows whose identity
    to the target (over the row's residues in the target's columns) is >= low and < high; the
    default drops only near-copies. Without a target row, all rows are used (with a warning) and
    weighted over all columns; an ``identity`` range other than the default is then an error."""
    target = check_sequence(target)
    low, high = identity
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"identity range must satisfy 0 <= low < high <= 1, got {identity}")
    query, offset = _query_row(target, alignment)
    if query is None:
        if (low, high) != NOT_COPIES:
            raise ValueError(f"{alignment.source}: the target is not among the first rows of "
                             "the alignment, so identity to it cannot be measured")
        warnings.warn(f"{alignment.source}: the target is not among the first rows of the "
                      f"alignment; all {len(alignment)} rows are used as homologs", stacklevel=2)
        rows = [_clean(r) for r in alignment.aligned]
        keep = [i for i, s in enumerate(alignment.sequences) if s and _clean(s) != target]
        seqs = [_clean(alignment.sequences[i]) if region == "full"
                else _clean(rows[i]).replace("-", "") for i in keep]
        weights = redundancy_weights([rows[i] for i in keep])
        return _homolog_set(seqs, weights, _describe(alignment) + ", no target row")
    cols = _target_columns(alignment, query, offset, len(target))
    rows = ["".join(r[c] for c in cols) for r in (_clean(a) for a in alignment.aligned)]
    onehot = _onehot(rows)
    residues = onehot.sum(1)
    identities = (onehot @ onehot[query]) / np.maximum(residues, 1.0)
    keep = [i for i in range(len(rows)) if i != query and residues[i] >= MIN_COVERAGE * len(target)
            and low <= identities[i] < high]
    seqs = [_clean(alignment.sequences[i]) if region == "full" else rows[i].replace("-", "")
            for i in keep]
    return _homolog_set(seqs, redundancy_weights([rows[i] for i in keep]), _describe(alignment))


def _describe(alignment: Alignment) -> str:
    if alignment.format == "jackhmmer":
        return alignment.source
    return f"{Path(alignment.source).name} ({alignment.format})"


def _homolog_set(seqs, weights, source: str) -> HomologSet:
    pairs = [(s, float(w)) for s, w in zip(seqs, weights) if s]
    return HomologSet(tuple(s for s, _ in pairs), tuple(w for _, w in pairs), source)


# ---------------------------------------------------------------------------- local search
_DATABASES: dict = {}
_CACHE_VERSION = 3  # bump when what a cached search holds changes


def _database(path: Path):
    """The database as a pyhmmer digital sequence block and its name -> index map, read once per
    process."""
    from pyhmmer import easel

    key = str(path)
    if key not in _DATABASES:
        alphabet = easel.Alphabet.amino()
        with easel.SequenceFile(str(path), digital=True, alphabet=alphabet) as handle:
            block = handle.read_block()
        _DATABASES[key] = block, {s.name: k for k, s in enumerate(block)}
    return _DATABASES[key]


def _query_columns(ali, length: int) -> str:
    """A domain alignment as a row in the target's columns (``-`` where the hit has none; the
    hit's insertions dropped)."""
    row = ["-"] * length
    q = ali.hmm_from - 1
    for qc, tc in zip(ali.hmm_sequence, ali.target_sequence):
        if qc in ".-":  # an insertion in the hit
            continue
        if q < length:
            row[q] = tc.upper() if tc.isalpha() else "-"
        q += 1
    return "".join(row)


def search(target: str, database=None, cache: bool = True, progress: bool = False,
           **settings) -> Alignment:
    """Homologs of ``target`` by pyhmmer's jackhmmer against ``database`` (default: the registry's
    Swiss-Prot file; a missing file says how to get it), on all cores, ``SEARCH`` defaults
    overridden by ``settings``. Returns an ``Alignment`` whose first row is the target and whose
    other rows are the hits' included domains (one row each) in the target's columns, ``sequences``
    the hits' full sequences; ``source`` says how many hits and how long the search took. Cached per (target, database hash, settings) in the user cache."""
    from tttlab.data import registry

    target = check_sequence(target)
    opts = {**SEARCH, **settings}
    path = Path(database) if database else registry.path(DATABASE)  # verified, or how to get it
    if not path.is_file():
        raise FileNotFoundError(f"homolog database not found: {path}")
    db_hash = registry.entry(DATABASE).sha256 if not database else registry.sha256sum(path)
    key = hashlib.sha256(json.dumps([_CACHE_VERSION, target, db_hash, opts], sort_keys=True)
                         .encode()).hexdigest()[:24]
    cached = registry.cache_dir() / "homologs" / f"{key}.json"
    if cache and cached.is_file():
        data = json.loads(cached.read_text())
        return Alignment(tuple(data["ids"]), tuple(data["aligned"]), tuple(data["sequences"]),
                         "jackhmmer", data["source"])
    import pyhmmer
    from pyhmmer import easel

    start = time.perf_counter()
    block, by_name = _database(path)
    alphabet = easel.Alphabet.amino()
    query = easel.TextSequence(name=b"target", sequence=target).digitize(alphabet)
    result = next(iter(pyhmmer.hmmer.jackhmmer(
        [query], block, max_iterations=opts["iterations"], E=opts["E"], incE=opts["incE"],
        cpus=0)))
    ids, aligned, seqs = ["target"], [target], [target]
    for hit in result.hits:
        if not hit.included:
            continue
        name = hit.name.decode() if isinstance(hit.name, bytes) else str(hit.name)
        full = block[by_name[hit.name]].textize().sequence
        for d, domain in enumerate(hit.domains.included):  # e.g. protein G's B1, B2, B3
            if len(ids) > opts["max_hits"]:
                break
            ids.append(name if d == 0 else f"{name}/{d + 1}")
            aligned.append(_query_columns(domain.alignment, len(target)))
            seqs.append(full)
    coverage = float(np.mean([1 - row.count("-") / len(target) for row in aligned[1:]] or [0]))
    source = (f"jackhmmer of {path.name}: {len({i.split('/')[0] for i in ids[1:]})} hits, "
              f"{len(ids) - 1} domains covering {100 * coverage:.0f} % of the target on average, "
              f"{time.perf_counter() - start:.0f} s")
    if progress:
        print(source, flush=True)
    if cache:
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cached, json.dumps({"ids": ids, "aligned": aligned,
                                              "sequences": seqs, "source": source}))
    return Alignment(tuple(ids), tuple(aligned), tuple(seqs), "jackhmmer", source)


def source_for(source, name: str):
    """The homolog source of one protein ``name`` in a run over many: ``"auto"`` as is; a folder:
    its MSA file named after the protein (``<name>.a3m``, ``.a2m``, ``.sto``, ``.fasta`` ...,
    gzipped or not), or ``None`` (single-sequence TTT for that protein) when there is none; a
    file or a list: the same for every protein."""
    from tttlab.data.msa import _SUFFIXES

    if source is None or (isinstance(source, str) and source == "auto"):
        return source
    folder = Path(source) if isinstance(source, (str, Path)) else None
    if folder is None or not folder.is_dir():
        return source
    for suffix in _SUFFIXES:
        for candidate in (folder / f"{name}{suffix}", folder / f"{name}{suffix}.gz"):
            if candidate.is_file():
                return candidate
    return None


def fingerprint(family: HomologSet | None) -> str | None:
    """A short hash of a homolog set's sequences and weights (cache keys of runs that use it)."""
    if family is None:
        return None
    digest = hashlib.sha256()
    for seq, weight in zip(family.sequences, family.weights):
        digest.update(f"{seq}:{weight:.6g};".encode())
    return digest.hexdigest()[:16]


def homologs(target: str, source, region: str = "aligned",
             identity: tuple[float, float] = NOT_COPIES, **search_settings) -> HomologSet:
    """The ``HomologSet`` of ``target`` from ``source``: an MSA file (path), ``"auto"`` (``search``
    of the registry's Swiss-Prot file), a list of sequences, or a ``HomologSet`` (returned).
    ``region`` and ``identity`` as in ``from_alignment`` (alignments only)."""
    if isinstance(source, HomologSet):
        return source
    if isinstance(source, str) and source == "auto":
        return from_alignment(target, search(target, **search_settings), region, identity)
    if isinstance(source, (str, Path)):
        return from_alignment(target, read_msa(source), region, identity)
    return HomologSet.of(source)
