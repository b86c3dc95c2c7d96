"""Function case study: a fixed head on protein embeddings before and after test-time training
(the ProteinTTT protocol, Bushuiev et al., arXiv 2411.02109): DeepLoc / setHARD localisation
(Almagro Armenteros et al. 2017; Staerk et al. 2021), terpene synthase types (Samusevich et al.
2024), bootstrap metrics and ``tttlab function``. Embeddings and their cache are in
``tttlab.embeddings``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tttlab.common.sequences import MAX_RESIDUES, clean_sequence
from tttlab.common.stats import bootstrap_draws, percentile_interval, spearman
from tttlab.studies.embeddings import (cache_dir, embed, embed_after_ttt,  # noqa: F401 (cache_dir)
                                       pseudo_perplexities)

#: DeepLoc's 10 locations, in the Light Attention order
LOCATIONS = ("Cell.membrane", "Cytoplasm", "Endoplasmic.reticulum", "Golgi.apparatus",
             "Lysosome/Vacuole", "Mitochondrion", "Nucleus", "Peroxisome", "Plastid",
             "Extracellular")


# ------------------------------------------------------------------------------ data sets
def parse_deeploc_header(header: str) -> tuple[str, str, str]:
    """``"Q12981 Endoplasmic.reticulum-U new_test_set"`` -> (accession, location, membrane flag).

    Dual labels such as ``Cytoplasm-Nucleus-U`` (23 proteins of ``deeploc_our_val_set``) keep the
    first location, as the Light Attention code does. ``ValueError`` for anything else.
    """
    parts = header.split()
    if len(parts) >= 2 and "-" in parts[1]:
        location, flag = parts[1].rsplit("-", 1)
        location = location.split("-")[0]
        if location in LOCATIONS and flag in ("M", "S", "U"):
            return parts[0], location, flag
    raise ValueError(f"malformed DeepLoc header {header.strip()!r}: expected 'ACCESSION "
                     f"Location-M|S|U [set]' with Location one of {', '.join(LOCATIONS)}")


def read_deeploc(path) -> pd.DataFrame:
    """A DeepLoc-style FASTA as a table (``id``, ``label``, ``membrane``, ``sequence``,
    ``length``); a malformed header or sequence raises a one-line ``ValueError`` naming the file
    and the record."""
    from tttlab.data.fasta import read_fasta

    rows = []
    for number, (header, seq) in enumerate(read_fasta(path), start=1):
        where = f"{Path(path).name} record {number} (>{header.strip()[:60]})"
        try:
            accession, location, flag = parse_deeploc_header(header)
            seq = clean_sequence(seq, "sequence")
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        rows.append({"id": accession, "label": location, "membrane": flag, "sequence": seq,
                     "length": len(seq)})
    if not rows:
        raise ValueError(f"{path}: no FASTA records")
    return pd.DataFrame(rows)


def read_tps(min_members: int = 100, path=None) -> pd.DataFrame:
    """Terpene synthases with one TPS type, keeping types with at least ``min_members`` proteins
    (default 100: sesq, mono, tri, di). Columns ``id``, ``label``, ``sequence``, ``length``,
    ``kingdom``."""
    from tttlab.data.registry import path as data_path

    table = pd.read_csv(path or data_path("terpene_synthases/tps_proteins.csv"))
    single = table[~table["tps_types"].str.contains(";", na=True)]
    counts = single["tps_types"].value_counts()
    single = single[single["tps_types"].isin(counts[counts >= min_members].index)]
    return pd.DataFrame({"id": single["uniprot_id"], "label": single["tps_types"],
                         "sequence": [clean_sequence(s, i) for s, i in
                                      zip(single["sequence"], single["uniprot_id"])],
                         "length": single["length"], "kingdom": single["kingdom"]}
                        ).reset_index(drop=True)


def split(table: pd.DataFrame, test_fraction: float = 0.2, seed: int = 0):
    """Stratified (by ``label``), seeded train/test split of a table in which proteins with the
    same sequence stay on one side (the split is drawn over distinct sequences, each with its
    most common label), so no test protein is also a training protein."""
    from sklearn.model_selection import train_test_split

    groups = table.groupby("sequence", sort=False)["label"].agg(lambda x: x.mode().iloc[0])
    train_seqs, _ = train_test_split(groups.index.to_numpy(), test_size=test_fraction,
                                     random_state=seed, stratify=groups.to_numpy())
    in_train = table["sequence"].isin(set(train_seqs))
    return table[in_train].reset_index(drop=True), table[~in_train].reset_index(drop=True)


def subsample(table: pd.DataFrame, n: int | None = None, seed: int = 0,
              max_length: int | None = None, crop: int | None = None) -> pd.DataFrame:
    """``n`` rows drawn with ``seed`` (all when ``n`` is None), after keeping rows with
    ``length <= max_length`` when given; original order kept. ``crop`` cuts every sequence to its
    first ``crop`` residues (``length`` updated), for both the embeddings and TTT."""
    if max_length is not None:
        table = table[table["length"] <= max_length]
    if n is not None and n < len(table):
        table = table.sample(n=n, random_state=seed).sort_index()
    table = table.reset_index(drop=True)
    if crop is not None:
        table = table.assign(sequence=table["sequence"].str[:crop])
        table = table.assign(length=table["sequence"].str.len())
    return table


# ------------------------------------------------------------------------ head & metrics
def train_head(X, y, C: float = 1.0, class_weight: str | None = "balanced", seed: int = 0):
    """Standardise the features, then a multinomial logistic regression (lbfgs). ``balanced``
    class weights by default, so rare classes count in macro-F1 rather than being ignored."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    head = make_pipeline(StandardScaler(), LogisticRegression(
        C=C, class_weight=class_weight, max_iter=5000, random_state=seed))
    return head.fit(np.asarray(X), np.asarray(y))


def _scores(true: np.ndarray, pred: np.ndarray, k: int):
    """Accuracy and macro-F1 (over the classes present in ``true``) from integer codes."""
    cm = np.bincount(true * k + pred, minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(1), cm.sum(0)
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros(k), where=support + predicted > 0)
    return tp.sum() / len(true), f1[support > 0].mean()


def bootstrap_metrics(y_true, y_before, y_after, n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95) -> pd.DataFrame:
    """Accuracy and macro-F1 (over the classes present in the test set) before and after, with
    percentile bootstrap intervals from ``n_boot`` resamples of the test proteins; the same
    resamples serve both columns, so ``delta`` (after - before) gets a paired interval."""
    classes = sorted(set(y_true) | set(y_before) | set(y_after))
    code = {c: i for i, c in enumerate(classes)}
    true, before, after = (np.array([code[v] for v in ys]) for ys in (y_true, y_before, y_after))
    k, n = len(classes), len(true)
    if n == 0:
        raise ValueError("no test proteins to score")
    point = np.array([_scores(true, before, k), _scores(true, after, k)])  # 2 x 2
    draws = bootstrap_draws(lambda idx: np.array([
        [_scores(true[i], before[i], k), _scores(true[i], after[i], k)] for i in idx]).reshape(
        len(idx), 4), n, n_boot, seed).reshape(n_boot, 2, 2)
    rows = {}
    for m, metric in enumerate(("accuracy", "macro_f1")):
        (b_lo, b_hi), (a_lo, a_hi), (d_lo, d_hi) = (
            percentile_interval(x, level) for x in (draws[:, 0, m], draws[:, 1, m],
                                                    draws[:, 1, m] - draws[:, 0, m]))
        rows[metric] = {"before": point[0, m], "before_low": b_lo, "before_high": b_hi,
                        "after": point[1, m], "after_low": a_lo, "after_high": a_hi,
                        "delta": point[1, m] - point[0, m], "delta_low": d_lo, "delta_high": d_hi}
    return pd.DataFrame(rows).T


# ----------------------------------------------------------------------------- protocol
@dataclass
class FunctionResult:
    """Everything one run of the protocol produced (see ``run_protocol``)."""

    table: pd.DataFrame
    metrics: pd.DataFrame
    head: object
    train_embeddings: np.ndarray
    train_labels: np.ndarray
    before: np.ndarray
    after: np.ndarray
    seconds: float

    @property
    def classes(self) -> list:
        return list(self.head.classes_)

    def confusion(self, which: str = "before") -> pd.DataFrame:
        """Counts, rows = true class, columns = predicted class (the head's classes)."""
        from sklearn.metrics import confusion_matrix

        labels = sorted(set(self.classes) | set(self.table["label"]))
        cm = confusion_matrix(self.table["label"], self.table[f"pred_{which}"], labels=labels)
        return pd.DataFrame(cm, index=pd.Index(labels, name="true"),
                            columns=pd.Index(labels, name="predicted"))

    def summary(self) -> dict:
        """The numbers the CLI prints with ``--json``: the metrics with their intervals, the
        paired change (``*_delta_ci95``), correct counts, predictions ``changed``, proteins
        ``fixed`` (wrong before, right after) and ``broken``, and the Spearman correlation of
        each protein's change in the probability of its true class with its pseudo-perplexity
        before TTT."""
        m, t = self.metrics, self.table
        out = {"n_train": len(self.train_labels), "n_test": len(t)}
        for metric in ("accuracy", "macro_f1"):
            for which in ("before", "after"):
                out[f"{metric}_{which}"] = round(float(m.loc[metric, which]), 4)
                out[f"{metric}_{which}_ci95"] = [round(float(m.loc[metric, f"{which}_low"]), 4),
                                                 round(float(m.loc[metric, f"{which}_high"]), 4)]
            out[f"{metric}_delta_ci95"] = [round(float(m.loc[metric, "delta_low"]), 4),
                                           round(float(m.loc[metric, "delta_high"]), 4)]
        right_before, right_after = t["pred_before"] == t["label"], t["pred_after"] == t["label"]
        out.update(correct_before=int(right_before.sum()), correct_after=int(right_after.sum()),
                   changed=int((t["pred_before"] != t["pred_after"]).sum()),
                   fixed=int((~right_before & right_after).sum()),
                   broken=int((right_before & ~right_after).sum()))
        rho = spearman(t["delta_p_true"], t["ppl_before"])
        out["spearman_delta_p_true_vs_ppl_before"] = None if np.isnan(rho) else round(rho, 4)
        if "n_homologs" in t:
            out["n_homologs"] = int(t["n_homologs"].sum())  # over the test proteins
        out["seconds"] = round(self.seconds, 1)
        return out


def check_sets(train: pd.DataFrame, test: pd.DataFrame) -> None:
    """Refuse duplicate ids within a set (one-line ``ValueError``) and warn about proteins whose
    sequence is in both sets (their test score is not a held-out one)."""
    import warnings

    for name, table in (("training", train), ("test", test)):
        dup = table["id"][table["id"].duplicated()]
        if len(dup):
            raise ValueError(f"{len(dup)} duplicate id(s) in the {name} set, e.g. {dup.iloc[0]}: "
                             "give each protein one record")
    shared = test[test["sequence"].isin(set(train["sequence"]))]
    if len(shared):
        warnings.warn(f"{len(shared)} test protein(s) have a sequence that is also in the training "
                      f"set (e.g. {shared['id'].iloc[0]}): their scores are not held out",
                      stacklevel=3)


def run_protocol(model, train: pd.DataFrame, test: pd.DataFrame, cfg=None, layer: int = -1,
                 max_length: int = MAX_RESIDUES, ppl_positions: int = 64, n_boot: int = 1000,
                 seed: int = 0, cache=True, progress: bool = True,
                 homologs=None) -> FunctionResult:
    """Train the head once on base embeddings of ``train``; score ``test`` with base embeddings
    and with embeddings after TTT on each test protein (same head, same crop).

    ``train``/``test`` are tables with ``id``, ``label``, ``sequence`` (``read_deeploc``,
    ``read_tps``). The per-protein table holds predictions, the probability of the true class
    before/after (``p_true_*``, 0 when the head never saw that class), its change ``delta_p_true``
    and the sampled pseudo-perplexity before and after TTT. ``homologs``: homolog-aware TTT on each
    test protein: ``"auto"`` or a folder of MSA files named after the proteins' ids
    (``n_homologs`` per protein in the table).
    """
    check_sets(train, test)
    start = time.perf_counter()
    X_train = embed(model, train["sequence"], layer, "mean", max_length, cache=cache,
                    progress=progress)
    head = train_head(X_train, train["label"].to_numpy(), seed=seed)
    before = embed(model, test["sequence"], layer, "mean", max_length, cache=cache,
                   progress=progress)
    ppl = pseudo_perplexities(model, test["sequence"], ppl_positions, seed, max_length, cache,
                              progress)
    after, info = embed_after_ttt(model, test["sequence"], cfg, layer, "mean", max_length,
                                  ppl_positions, seed, cache, progress, homologs, test["id"])
    classes = list(head.classes_)
    column = [classes.index(y) if y in classes else -1 for y in test["label"]]
    table = test[["id", "label"]].reset_index(drop=True).copy()
    table["length"] = test["sequence"].str.len().to_numpy()
    for which, X in (("before", before), ("after", after)):
        proba = head.predict_proba(X)
        table[f"pred_{which}"] = head.classes_[proba.argmax(1)]
        table[f"p_true_{which}"] = [proba[i, c] if c >= 0 else 0.0 for i, c in enumerate(column)]
    table["delta_p_true"] = table["p_true_after"] - table["p_true_before"]
    table["ppl_before"] = ppl
    table = pd.concat([table, info], axis=1)
    metrics = bootstrap_metrics(table["label"], table["pred_before"], table["pred_after"],
                                n_boot=n_boot, seed=seed)
    return FunctionResult(table, metrics, head, X_train, train["label"].to_numpy(), before, after,
                          time.perf_counter() - start)


def summary_table(results: dict) -> pd.DataFrame:
    """One row per task and metric: before / after TTT with 95 % intervals and the paired change,
    from ``{"task name": FunctionResult}``."""
    frames = []
    for task, result in results.items():
        m = result.metrics.rename_axis("metric").reset_index()
        frames.append(m.assign(task=task, n_train=len(result.train_labels),
                               n_test=len(result.table)))
    out = pd.concat(frames, ignore_index=True)
    return out[["task", "metric", "n_train", "n_test"] + list(results[next(iter(results))]
                                                           .metrics.columns)]


def pca_shift(result: FunctionResult, n: int = 6) -> pd.DataFrame:
    """2-D PCA (fit on the head's standardised training embeddings) of the training proteins and
    of the ``n`` test proteins whose true-class probability changed most, before and after TTT.

    Columns ``id``, ``label``, ``set`` (train/test), ``pc1``, ``pc2`` and, for test rows,
    ``pc1_after``, ``pc2_after``."""
    from sklearn.decomposition import PCA

    scaler = result.head[0]
    pca = PCA(n_components=2, random_state=0).fit(scaler.transform(result.train_embeddings))
    train_xy = pca.transform(scaler.transform(result.train_embeddings))
    rows = pd.DataFrame({"id": "", "label": result.train_labels, "set": "train",
                         "pc1": train_xy[:, 0], "pc2": train_xy[:, 1]})
    pick = result.table["delta_p_true"].abs().sort_values(ascending=False).index[:n]
    b = pca.transform(scaler.transform(result.before[pick]))
    a = pca.transform(scaler.transform(result.after[pick]))
    test = pd.DataFrame({"id": result.table.loc[pick, "id"].to_numpy(),
                         "label": result.table.loc[pick, "label"].to_numpy(), "set": "test",
                         "pc1": b[:, 0], "pc2": b[:, 1], "pc1_after": a[:, 0],
                         "pc2_after": a[:, 1]})
    return pd.concat([rows, test], ignore_index=True)
