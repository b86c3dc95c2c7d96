"""Protein embeddings before and after test-time training, cached on disk: mean-pooled or
per-residue representations of a base ESM-2, the same after customising the model to each protein
(Bushuiev et al., arXiv 2411.02109), and a sampled pseudo-perplexity (Salazar et al. 2020).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tttlab.common.files import atomic_write
from tttlab.common.sequences import MAX_RESIDUES, STANDARD_AA, clean_sequence
from tttlab.engine.scoring import (masked_marginals, max_residues, pseudo_perplexity,
                                   representations)


# --------------------------------------------------------------------------- the cache
def cache_dir() -> Path:
    """Embedding cache folder: ``$TTTLAB_CACHE_DIR/embeddings`` when the variable is set, else
    ``~/.cache/tttlab/embeddings``."""
    root = os.environ.get("TTTLAB_CACHE_DIR") or Path.home() / ".cache" / "tttlab"
    return Path(root).expanduser() / "embeddings"


def model_fingerprint(model) -> str:
    """SHA-256 over every tensor of ``model.state_dict()`` (names, shapes, dtypes, bytes): the
    model's identity in cache keys, whatever name or file it was loaded from."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(**fields) -> str:
    """Hex key of a JSON-serialisable description (model fingerprint, sequence, TTT config...)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def ppl_key(fingerprint: str, crop: str, n_positions: int, seed: int) -> str:
    """Cache key of a sampled pseudo-perplexity (``pseudo_perplexities``)."""
    return cache_key(kind="ppl", model=fingerprint, seq=crop, n=n_positions, seed=seed)


def ttt_key(fingerprint: str, seq: str, crop: str, layer: int, pool, cfg, ppl_positions: int,
            seed: int, homologs: str | None = None) -> str:
    """Cache key of an embedding after TTT (``embed_after_ttt``); ``homologs`` is the homolog
    set's ``data.homologs.fingerprint`` (left out of the key when None, so single-sequence keys
    stay what they were)."""
    extra = {} if homologs is None else {"homologs": homologs, "share": cfg.homolog_target_share,
                                         "region": cfg.homolog_region}
    return cache_key(kind="ttt", model=fingerprint, seq=seq, crop=crop, layer=layer, pool=pool,
                     ttt=_ttt_fields(cfg), ppl_positions=ppl_positions, ppl_seed=seed, **extra)


#: TTTConfig fields added after caches were written, with the behaviour those caches had: left out
#: of a key while they hold that value, so existing entries stay valid
_NEW_FIELDS = {"mask_count": "bernoulli", "replace_vocab": "amino_acids", "crop": "residues",
               "lora_init": "kaiming", "keep_best_by": "pseudo_perplexity", "keep_best_mode": "min"}
#: fields that only matter with homologs (``ttt_key`` adds them then)
_HOMOLOG_FIELDS = ("homolog_target_share", "homolog_region")


def _ttt_fields(cfg) -> dict:
    return {k: v for k, v in asdict(cfg).items()
            if k not in _HOMOLOG_FIELDS and not (k in _NEW_FIELDS and v == _NEW_FIELDS[k])}


def _path(key: str, cache) -> Path:
    return (cache_dir() if cache is True else Path(cache)) / f"{key}.npz"


#: one compressed archive of many finished entries (members ``<key>/<array>``), read when a
#: folder holds no ``<key>.npz`` of its own: how a finished run is kept (``pack_entries``)
PACK_NAME = "entries.npz"


def _pack(folder: Path):
    """The open ``PACK_NAME`` archive of ``folder`` and its keys, or None."""
    pack = folder / PACK_NAME
    if not pack.is_file():
        return None
    stat = pack.stat()
    cached = _PACKS.get(pack)
    if cached is None or cached[0] != (stat.st_size, stat.st_mtime_ns):
        archive = np.load(pack)
        keys = {}
        for member in archive.files:
            key, name = member.split("/", 1)
            keys.setdefault(key, []).append(name)
        cached = _PACKS[pack] = ((stat.st_size, stat.st_mtime_ns), archive, keys)
    return cached[1], cached[2]


_PACKS: dict = {}


def has_entry(key: str, cache) -> bool:
    """True when ``key`` is stored in ``cache`` (its own file or the folder's pack)."""
    if not cache:
        return False
    path = _path(key, cache)
    pack = _pack(path.parent)
    return path.is_file() or (pack is not None and key in pack[1])


def _load(key: str, cache) -> dict[str, np.ndarray] | None:
    """The arrays stored under ``key``, or None (no cache, no entry, or a damaged file)."""
    if not cache:
        return None
    path = _path(key, cache)
    if not path.is_file():
        pack = _pack(path.parent)
        if pack is None or key not in pack[1]:
            return None
        return {name: pack[0][f"{key}/{name}"] for name in pack[1][key]}
    import zipfile

    try:
        with np.load(path) as saved:
            return {k: saved[k] for k in saved.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None  # a truncated or damaged entry is recomputed (and replaced by _store)


def pack_entries(folder, keys, manifest: dict) -> Path:
    """Write the entries ``keys`` of ``folder`` (own files or an older pack) into one compressed
    ``PACK_NAME`` archive, with ``manifest`` (what produced them) as ``manifest.json`` beside it;
    the per-entry files can then be deleted."""
    folder = Path(folder)
    arrays = {}
    for key in keys:
        entry = _load(key, folder)
        if entry is None:
            raise ValueError(f"{folder}: no entry {key}")
        arrays.update({f"{key}/{name}": value for name, value in entry.items()})
    atomic_write(folder / PACK_NAME, lambda handle: np.savez_compressed(handle, **arrays))
    atomic_write(folder / "manifest.json",
                 lambda handle: handle.write(json.dumps(manifest, indent=1).encode()))
    return folder / PACK_NAME


def _store(key: str, arrays: dict[str, np.ndarray], cache) -> dict[str, np.ndarray]:
    """Write ``arrays`` as ``<key>.npz`` atomically (temporary file, then rename)."""
    if cache:
        path = _path(key, cache)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda handle: np.savez(handle, **arrays))
        except OSError as err:  # read-only or full cache: keep the result, warn, do not stop
            import warnings

            warnings.warn(f"embedding cache {path.parent} not writable ({err.strerror or err}); "
                          "results are not cached", stacklevel=3)
    return arrays


def _cached(key: str, compute, cache) -> dict[str, np.ndarray]:
    """``compute()`` (a dict of arrays), read from the cache when stored there before."""
    hit = _load(key, cache)
    return hit if hit is not None else _store(key, compute(), cache)


# ---------------------------------------------------------------------------- embeddings
def embed(model, seqs, layer: int = -1, pool: str | None = "mean", max_length: int = MAX_RESIDUES,
          batch_size: int = 8, cache=True, progress: bool = True):
    """Base-model embeddings of ``seqs``, read from / written to the disk cache.

    Parameters
    ----------
    model : a fair-esm ESM-2 model.
    seqs : protein sequences (U/O/B/Z/J are read as X, see ``clean_sequence``).
    layer : representation layer, -1 = last (after the final layer norm).
    pool : ``"mean"`` (N x C array, mean over residues) or ``None`` (list of L x C arrays).
    max_length : proteins are cropped to their first ``max_length`` residues (at most 1022, the
        ESM-2 context without BOS/EOS), so residues past it never enter the embedding.
    cache : ``True`` (``cache_dir()``), a folder, or ``False``. The key hashes the model weights,
        the cropped sequence, layer and pooling, so a retrained model never reads stale entries.
    """
    seqs = [clean_sequence(s)[: min(max_length, max_residues(model))] for s in seqs]
    layer = model.num_layers if layer == -1 else layer
    fingerprint = model_fingerprint(model)
    keys = [cache_key(kind="embedding", model=fingerprint, seq=s, layer=layer, pool=pool)
            for s in seqs]
    out: dict[int, np.ndarray] = {}
    missing = []
    for i, key in enumerate(keys):
        hit = _load(key, cache)
        if hit is not None:
            out[i] = hit["x"]
        else:
            missing.append(i)
    from tqdm.auto import tqdm

    missing.sort(key=lambda i: len(seqs[i]))
    bar = tqdm(total=len(missing), disable=not progress or not missing, desc="embeddings")
    for first in range(0, len(missing), 8 * batch_size):
        chunk = missing[first:first + 8 * batch_size]
        reps = representations(model, [seqs[i] for i in chunk], layer=layer, pool=pool,
                               batch_size=batch_size)
        for i, rep in zip(chunk, reps):
            out[i] = _store(keys[i], {"x": np.asarray(rep)}, cache)["x"]
        bar.update(len(chunk))
    bar.close()
    ordered = [out[i] for i in range(len(seqs))]
    return np.stack(ordered) if pool == "mean" else ordered


def sampled_pseudo_perplexity(model, seq: str, n_positions: int = 64, seed: int = 0,
                              max_length: int = MAX_RESIDUES, batch_size: int = 8) -> float:
    """Pseudo-perplexity estimated on ``n_positions`` standard residues drawn (fixed ``seed``) from
    the first ``max_length`` residues, one masked copy per position (``scoring.masked_marginals``
    at those positions); exact (``scoring.pseudo_perplexity`` of the crop) when the crop has no
    more positions than that."""
    seq = clean_sequence(seq)[: min(max_length, max_residues(model))]
    candidates = [i for i, c in enumerate(seq) if c in STANDARD_AA]
    if not candidates:
        return float("nan")
    if n_positions < len(candidates):
        rng = np.random.default_rng(seed)
        candidates = sorted(rng.choice(candidates, size=n_positions, replace=False).tolist())
    marginals = masked_marginals(model, seq, batch_size=batch_size, positions=candidates)
    return pseudo_perplexity(model, seq, marginals=marginals)


def pseudo_perplexities(model, seqs, n_positions: int = 64, seed: int = 0,
                        max_length: int = MAX_RESIDUES, cache=True, progress: bool = True):
    """``sampled_pseudo_perplexity`` of every sequence (cached), as a float array."""
    from tqdm.auto import tqdm

    fingerprint = model_fingerprint(model)
    values = []
    for s in tqdm(seqs, disable=not progress, desc="pseudo-perplexity"):
        s = clean_sequence(s)[: min(max_length, max_residues(model))]
        key = ppl_key(fingerprint, s, n_positions, seed)
        values.append(float(_cached(key, lambda s=s: {"x": np.array(sampled_pseudo_perplexity(
            model, s, n_positions, seed, max_length))}, cache)["x"]))
    return np.array(values)


def embed_after_ttt(model, seqs, cfg=None, layer: int = -1, pool: str | None = "mean",
                    max_length: int = MAX_RESIDUES, ppl_positions: int = 64, seed: int = 0,
                    cache=True, progress: bool = True, homologs=None, names=None):
    """Embeddings after customising ``model`` to each protein in turn (restored after each).

    TTT trains on the whole (cleaned) sequence with ``cfg`` (default ``preset_for(model)``):
    proteins longer than ``cfg.crop_size`` tokens get a random ``crop_size`` window per masked copy.
    The embedding is then taken as in ``embed`` (first ``max_length`` residues). The key adds the
    TTT config. ``homologs``: homolog-aware TTT for each protein: ``"auto"``, a folder of MSA files
    named after ``names`` (``data.homologs.source_for``), or one file for all; the key then adds
    the homolog set.

    Returns
    -------
    (embeddings, info): N x C array (or list of L x C when ``pool=None``) and a DataFrame with
    ``ppl_after`` (``sampled_pseudo_perplexity`` of the customised model), ``loss_first``,
    ``loss_last`` (TTT loss at the first and last step) and ``ttt_seconds``.
    """
    from tqdm.auto import tqdm

    from tttlab.data import homologs as family_data
    from tttlab.engine.config import preset_for
    from tttlab.engine.ttt import customized

    cfg = cfg or preset_for(model)
    layer = model.num_layers if layer == -1 else layer
    fingerprint = model_fingerprint(model)
    seqs = list(seqs)
    names = list(names) if names is not None else [f"seq{i + 1}" for i in range(len(seqs))]
    embeddings, rows = [], []
    for seq, name in tqdm(list(zip(seqs, names)), disable=not progress, desc="TTT per protein"):
        seq = clean_sequence(seq)
        crop = seq[: min(max_length, max_residues(model))]
        source = family_data.source_for(homologs, name)
        family = None if source is None else family_data.homologs(seq, source, cfg.homolog_region)

        def compute(seq=seq, crop=crop, family=family):
            with customized(model, seq, cfg, progress=False, homologs=family) as result:
                rep = representations(model, [crop], layer=layer, pool=pool)[0]
                ppl = sampled_pseudo_perplexity(model, crop, ppl_positions, seed, max_length)
            losses = [h["loss"] for h in result.history if h["loss"] is not None]
            return {"x": np.asarray(rep), "ppl_after": np.array(ppl),
                    "loss_first": np.array(losses[0] if losses else np.nan),
                    "loss_last": np.array(losses[-1] if losses else np.nan),
                    "ttt_seconds": np.array(result.seconds)}

        key = ttt_key(fingerprint, seq, crop, layer, pool, cfg, ppl_positions, seed,
                      family_data.fingerprint(family))
        saved = _cached(key, compute, cache)
        embeddings.append(saved["x"])
        rows.append({**{k: float(v) for k, v in saved.items() if k != "x"},
                     "n_homologs": len(family) if family is not None else 0})
    out = np.stack(embeddings) if pool == "mean" else embeddings
    return out, pd.DataFrame(rows, columns=["ppl_after", "loss_first", "loss_last",
                                            "ttt_seconds", "n_homologs"])
