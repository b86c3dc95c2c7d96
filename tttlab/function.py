"""Function case study: a fixed head on protein embeddings before and after test-time training
(the ProteinTTT protocol, Bushuiev et al., arXiv 2411.02109): DeepLoc / setHARD localisation
(Almagro Armenteros et al. 2017; Staerk et al. 2021), terpene synthase types (Samusevich et al.
2024), bootstrap metrics and ``tttlab function``. Embeddings and their cache are in
``tttlab.embeddings``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .embeddings import (MAX_LENGTH, cache_dir, clean_sequence, embed, embed_after_ttt,  # noqa
                         model_fingerprint, pseudo_perplexities, sampled_pseudo_perplexity)
from .fitness import spearman

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
    from .data import read_fasta

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
    from .data import path as data_path

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
    """Stratified (by ``label``), seeded train/test split of a table."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(table, test_size=test_fraction, random_state=seed,
                                   stratify=table["label"])
    return train.reset_index(drop=True), test.reset_index(drop=True)


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
    rng = np.random.default_rng(seed)
    point = np.array([_scores(true, before, k), _scores(true, after, k)])  # 2 x 2
    draws = np.empty((n_boot, 2, 2))
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        draws[b] = [_scores(true[idx], before[idx], k), _scores(true[idx], after[idx], k)]
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    rows = {}
    for m, metric in enumerate(("accuracy", "macro_f1")):
        delta = draws[:, 1, m] - draws[:, 0, m]
        rows[metric] = {"before": point[0, m], "before_low": np.percentile(draws[:, 0, m], lo),
                        "before_high": np.percentile(draws[:, 0, m], hi), "after": point[1, m],
                        "after_low": np.percentile(draws[:, 1, m], lo),
                        "after_high": np.percentile(draws[:, 1, m], hi),
                        "delta": point[1, m] - point[0, m], "delta_low": np.percentile(delta, lo),
                        "delta_high": np.percentile(delta, hi)}
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
                 max_length: int = MAX_LENGTH, ppl_positions: int = 64, n_boot: int = 1000,
                 seed: int = 0, cache=True, progress: bool = True) -> FunctionResult:
    """Train the head once on base embeddings of ``train``; score ``test`` with base embeddings
    and with embeddings after TTT on each test protein (same head, same crop).

    ``train``/``test`` are tables with ``id``, ``label``, ``sequence`` (``read_deeploc``,
    ``read_tps``). The per-protein table holds predictions, the probability of the true class
    before/after (``p_true_*``, 0 when the head never saw that class), its change ``delta_p_true``
    and the sampled pseudo-perplexity before and after TTT.
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
                                  ppl_positions, seed, cache, progress)
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


# ---------------------------------------------------------------------------------- CLI
def _fasta_path(name: str) -> Path:
    p = Path(name).expanduser()
    if p.is_file():
        return p
    from .data import path as data_path

    return data_path(name)  # e.g. localization/setHARD.fasta under the shared data folder


def _cli(args) -> int:
    from .cli import CLIError, config_from_args
    from .models import load_model

    if args.tps:
        train, test = split(read_tps())
    else:
        if not args.train or not args.test:
            raise CLIError("give --train FASTA (one or more) and --test FASTA, or --tps")
        train = pd.concat([read_deeploc(_fasta_path(f)) for f in args.train], ignore_index=True)
        test = read_deeploc(_fasta_path(args.test))
    for name, value in (("--max-train", args.max_train), ("--max-test", args.max_test)):
        if value is not None and value < 1:
            raise CLIError(f"{name} must be >= 1")
    train = subsample(train, args.max_train, args.seed)
    test = subsample(test, args.max_test, args.seed)
    cfg = config_from_args(args)
    if args.grad_accum is not None:
        if args.grad_accum < 1:
            raise CLIError("--grad-accum must be >= 1")
        from dataclasses import replace

        cfg = replace(cfg, grad_accum_steps=args.grad_accum)
    model, _ = load_model(args.model, device=args.device)
    result = run_protocol(model, train, test, cfg, layer=args.layer, max_length=args.max_length,
                          seed=args.seed, cache=not args.no_cache, progress=not args.json)
    summary = result.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"head trained on {summary['n_train']} proteins, tested on {summary['n_test']}")
        print(result.metrics.round(3).to_string())
        print(f"correct {summary['correct_before']} -> {summary['correct_after']}; "
              f"{summary['changed']} predictions changed ({summary['fixed']} fixed, "
              f"{summary['broken']} broken); Spearman of the change in "
              f"p(true class) with pseudo-perplexity before TTT: "
              f"{summary['spearman_delta_p_true_vs_ppl_before']}")
        print(f"({summary['seconds']:.0f} s)")
    return 0


def register_cli(subparsers) -> None:
    """``tttlab function``: the head-before/after-TTT protocol on DeepLoc-style FASTA files."""
    from .cli import add_model_args

    p = subparsers.add_parser(
        "function", help="localisation head on embeddings before and after per-protein TTT",
        description="Train a logistic-regression head on base-model embeddings of --train, then "
        "score --test with base embeddings and with embeddings after TTT on each test protein. "
        "FASTA headers: 'ACCESSION Location-M|S|U [set]' (DeepLoc). Paths may be relative to "
        "the shared data folder, e.g. localization/setHARD.fasta.")
    p.add_argument("--train", action="append", metavar="FASTA", help="training FASTA (repeatable)")
    p.add_argument("--test", metavar="FASTA", help="test FASTA")
    p.add_argument("--tps", action="store_true",
                   help="terpene synthase types (sesq/mono/tri/di, seeded 80/20 split) instead")
    p.add_argument("--max-train", type=int, help="seeded subset of the training proteins")
    p.add_argument("--max-test", type=int, help="seeded subset of the test proteins")
    p.add_argument("--layer", type=int, default=-1, help="representation layer (-1 = last)")
    p.add_argument("--max-length", type=int, default=MAX_LENGTH,
                   help="embed the first N residues (default 1022, the ESM-2 limit)")
    p.add_argument("--grad-accum", type=int, metavar="N",
                   help="micro-batches (of batch_size masked copies) per TTT step, gradients "
                   "summed (default: the model's preset; tttlab-mini 4, ESM-2 35M 16)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    add_model_args(p)
    p.set_defaults(func=_cli)
