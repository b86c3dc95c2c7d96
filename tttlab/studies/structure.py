"""Structure case study: contact maps from ESM-2 attention (or a later backend such as ESMFold)
scored against experimental structures by top-L precision before and after test-time training, a
per-residue secondary-structure probe (Q3) held fixed, and the ``tttlab contacts`` command.
Metrics as in Rao et al. 2021 (long range |i - j| >= 24, medium 12-23); TTT: arXiv 2411.02109.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tttlab.data import registry as data
from tttlab.data.fasta import read_fasta
from tttlab.studies.contact_head import tokens_for
from tttlab.engine.scoring import scoring_mode
from tttlab.data.structures import load_target, pair_indices

RANGES = {"long": (24, None), "medium": (12, 23)}  #: sequence separation |i - j|
TOPS = {"L": 1, "L2": 2, "L5": 5}  #: top L, L/2, L/5 predictions
SS_FILES = ("sequences/flip_secondary_structure/sequences.fasta.gz",
            "sequences/flip_secondary_structure/sampled.fasta.gz")


# ------------------------------------------------------------------------ predicted contacts
def _esm2_contacts(model, seq: str) -> np.ndarray:
    tokens = tokens_for(model, seq)
    with scoring_mode(model):
        return model(tokens, return_contacts=True)["contacts"][0].float().cpu().numpy()


def _esmfold_contacts(model, seq: str) -> np.ndarray:
    """P(C-beta distance < 7.94 A) from ESMFold's distogram, assuming AlphaFold2's 64 bins (63
    edges from 2.3125 to 21.6875 A): the 19 bins below the edge nearest 8 A are summed.
    Not run in this project (ESMFold needs a GPU and openfold): check on first use."""
    import torch

    with torch.no_grad():
        logits = model.infer(seq)["distogram_logits"][0].float()
    edges = torch.linspace(2.3125, 21.6875, logits.shape[-1] - 1)
    return logits.softmax(-1)[..., : int((edges <= 8.0).sum())].sum(-1).cpu().numpy()


def _esmfold_language_model(model):
    return model.esm.float()  # ESMFold keeps its ESM-2 in fp16; TTT trains it in fp32


@dataclass(frozen=True)
class Backend:
    """A contact predictor: ``predict(model, seq) -> L x L`` probabilities, and the ESM-2 inside
    ``model`` that test-time training customises (``language_model(model)``)."""

    predict: Callable
    language_model: Callable = lambda model: model


#: contact predictors by name. ``esmfold`` expects ``esm.pretrained.esmfold_v1()`` (GPU,
#: ``pip install "fair-esm[esmfold]"`` + openfold): contacts from its distogram, TTT on its ESM-2.
BACKENDS = {"esm2": Backend(_esm2_contacts),
            "esmfold": Backend(_esmfold_contacts, _esmfold_language_model)}


def _backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {name!r}")
    return BACKENDS[name]


def predict_contacts(model, seq: str, backend: str = "esm2") -> np.ndarray:
    """L x L contact probabilities for ``seq`` (symmetric; ``backend`` picks the predictor)."""
    return _backend(backend).predict(model, seq)


# ---------------------------------------------------------------------------------- metrics
def precision_at(pred: np.ndarray, true: np.ndarray, top: int, min_sep: int = 24,
                 max_sep: int | None = None) -> float:
    """Fraction of true contacts among the ``top`` highest-scored pairs with
    ``min_sep <= j - i <= max_sep`` (pairs with unknown truth are left out; NaN if none remain)."""
    i, j = pair_indices(true, min_sep, max_sep)
    if top < 1 or len(i) == 0:
        return float("nan")
    order = np.argsort(-pred[i, j], kind="stable")[:top]
    return float(true[i[order], j[order]].mean())


def contact_precisions(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """``precision_at_{L,L2,L5}_{long,medium}`` with L the sequence length."""
    length = pred.shape[0]
    return {f"precision_at_{top}_{rng}": precision_at(pred, true, max(1, length // div), lo, hi)
            for rng, (lo, hi) in RANGES.items() for top, div in TOPS.items()}


def top_contacts(pred: np.ndarray, true: np.ndarray | None = None, top: int | None = None,
                 min_sep: int = 6):
    """The ``top`` (default L) highest-scored pairs with ``j - i >= min_sep`` as a DataFrame:
    ``i``, ``j`` (0-based), ``probability``, ``contact`` (1/0, NaN if unknown or no ``true``)."""
    import pandas as pd

    i, j = np.triu_indices(pred.shape[0], k=min_sep)
    order = np.argsort(-pred[i, j], kind="stable")[: top or pred.shape[0]]
    i, j = i[order], j[order]
    truth = true[i, j] if true is not None else np.full(len(i), np.nan)
    return pd.DataFrame({"i": i, "j": j, "probability": pred[i, j], "contact": truth})


# ---------------------------------------------------------------------------- before / after
def contacts_before_after(model, target, cfg=None, progress: bool = True, backend: str = "esm2",
                          homologs=None):
    """(predicted map before TTT, after TTT, ``TTTResult`` or None); the model is restored.
    ``homologs``: ``None``, an MSA file, ``"auto"`` or sequences (homolog-aware TTT)."""
    from tttlab.data.homologs import homologs as homologs_of
    from tttlab.engine.config import preset_for
    from tttlab.engine.ttt import customized

    target = load_target(target)
    lm = _backend(backend).language_model(model)  # first: ESMFold's cast to fp32 happens here
    before = predict_contacts(model, target.sequence, backend)
    if cfg is not None and cfg.steps == 0:
        return before, before, None
    family = None if homologs is None else homologs_of(
        target.sequence, homologs, (cfg or preset_for(lm)).homolog_region)
    with customized(lm, target.sequence, cfg, progress=progress, homologs=family) as result:
        after = predict_contacts(model, target.sequence, backend)
    return before, after, result


def evaluate_structure(model, pdb_path, chain: str | None = None, cfg=None, progress: bool = True,
                       backend: str = "esm2", homologs=None) -> dict:
    """Contact precision of one structure before and after test-time training.

    Parameters
    ----------
    model : a fair-esm ESM-2 with a fitted contact head (``tttlab.load_model``).
    pdb_path : a PDB file, a DMS id from ``dms_structure_map.csv``, or a ``Target``.
    chain : chain id (default: the first protein chain).
    cfg : ``TTTConfig`` (default: ``preset_for(model)``); ``steps=0`` skips TTT.
    homologs : ``None``, an MSA file, ``"auto"`` or sequences: homolog-aware TTT (the row then
        reports ``n_homologs`` and ``homolog_source``).

    Returns
    -------
    dict with ``id``, ``length``, ``source``, ``identity``, ``n_long_contacts``,
    ``long_contact_density`` (the long-range precision of random guessing),
    ``precision_at_{L,L2,L5}_{long,medium}_{before,after}``, ``max_probability_change`` (largest
    change of a contact probability through TTT) and ``seconds``.
    """
    start = time.perf_counter()
    target = load_target(pdb_path, chain)
    true = target.contacts()
    before, after, result = contacts_before_after(model, target, cfg, progress, backend, homologs)
    long_pairs = true[pair_indices(true, RANGES["long"][0])]
    row = {"id": target.id, "length": target.length, "source": target.source,
           "identity": round(target.identity, 3), "n_long_contacts": int(long_pairs.sum()),
           "long_contact_density": float(long_pairs.mean()) if len(long_pairs) else float("nan")}
    for key, value in contact_precisions(before, true).items():
        row[key + "_before"] = value
    for key, value in contact_precisions(after, true).items():
        row[key + "_after"] = value
    row["max_probability_change"] = float(np.abs(after - before).max())
    if homologs is not None:
        row["n_homologs"] = result.n_homologs if result is not None else 0
        row["homolog_source"] = result.homolog_source if result is not None else None
    row["seconds"] = round(time.perf_counter() - start, 2)
    return row


def evaluate_structures(model, targets, cfg=None, progress: bool = True, backend: str = "esm2"):
    """``evaluate_structure`` over many targets: a DataFrame, one row per protein."""
    import pandas as pd
    from tqdm.auto import tqdm

    rows = [evaluate_structure(model, t, cfg=cfg, progress=False, backend=backend)
            for t in tqdm(list(targets), disable=not progress, desc="structures")]
    return pd.DataFrame(rows)


def summary(table):
    """Means over proteins of every ``<metric>_before`` / ``<metric>_after`` pair of columns: a
    DataFrame indexed by metric with ``before``, ``after``, ``change`` and ``n`` (proteins)."""
    import pandas as pd

    metrics = [c[: -len("_before")] for c in table.columns
               if c.endswith("_before") and c[: -len("_before")] + "_after" in table.columns]
    rows = {m: {"before": table[m + "_before"].mean(), "after": table[m + "_after"].mean()}
            for m in metrics}
    out = pd.DataFrame(rows).T
    out["change"] = out["after"] - out["before"]
    out["n"] = len(table)
    return out


# ---------------------------------------------------------------- secondary-structure probe
def secondary_structure_chains(split: str = "train", n: int | None = None,
                               max_length: int | None = None) -> list[tuple[str, str, str]]:
    """(id, sequence, H/E/C labels) of FLIP's secondary-structure set, in file order: chains of
    ``SET=split`` (for ``train`` only ``VALIDATION=False``), standard letters only, at most
    ``max_length`` residues; the first ``n`` of them."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    seqs = {h.split()[0]: s for h, s in read_fasta(data.path(SS_FILES[0]))}
    out = []
    for header, labels in read_fasta(data.path(SS_FILES[1])):
        name, *tags = header.split()
        if f"SET={split}" not in tags or (split == "train" and "VALIDATION=True" in tags):
            continue
        seq = seqs.get(name, "")
        if len(seq) != len(labels) or set(seq) - set("ACDEFGHIKLMNPQRSTVWY"):
            continue
        if max_length is None or len(seq) <= max_length:
            out.append((name, seq, labels))
        if n is not None and len(out) >= n:
            break
    return out


def fit_ss_probe(model, chains, layer: int = -1, C: float = 1.0):
    """A per-residue 3-state classifier (standardise + multinomial logistic regression) on the
    model's per-residue representations (``layer``, -1 = last) of ``chains`` (id, seq, labels)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from tttlab.engine.scoring import representations

    reps = representations(model, [s for _, s, _ in chains], layer=layer, pool=None)
    X = np.concatenate(reps)
    y = np.array(list("".join(lab for _, _, lab in chains)))
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    return probe.fit(X, y)


def q3(probe, model, seq: str, labels: str, layer: int = -1) -> float:
    """3-state accuracy of ``probe`` on ``model``'s ``layer`` representation of ``seq``."""
    from tttlab.engine.scoring import representations

    rep = representations(model, seq, layer=layer, pool=None)[0]
    return float((probe.predict(rep) == np.array(list(labels))).mean())


def evaluate_ss_probe(model, probe, chains, cfg=None, progress: bool = True):
    """Q3 per test chain before and after per-protein TTT (the probe stays fixed): a DataFrame
    with ``id``, ``length``, ``q3_before``, ``q3_after``, ``seconds``."""
    import pandas as pd
    from tqdm.auto import tqdm

    from tttlab.engine.ttt import customized

    rows = []
    for name, seq, labels in tqdm(list(chains), disable=not progress, desc="Q3"):
        start = time.perf_counter()
        before = q3(probe, model, seq, labels)
        after = before
        if cfg is None or cfg.steps:
            with customized(model, seq, cfg, progress=False):
                after = q3(probe, model, seq, labels)
        rows.append({"id": name, "length": len(seq), "q3_before": before, "q3_after": after,
                     "seconds": round(time.perf_counter() - start, 2)})
    return pd.DataFrame(rows)
