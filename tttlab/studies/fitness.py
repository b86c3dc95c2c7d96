"""Fitness case study: zero-shot variant-effect prediction on ProteinGym-format deep mutational
scans (DMS), before and after test-time training (Bushuiev et al., arXiv 2411.02109).

Metrics follow ProteinGym (Notin et al., NeurIPS 2023): Spearman with a bootstrap interval, NDCG on
the top 10 % of measured scores, per mutation depth. Reading and validating DMS files: ``dms.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from tttlab.common.files import jsonable
from tttlab.common.stats import bootstrap_draws, percentile_interval, spearman
from tttlab.data.dms import SHARED_ASSAYS, DMSAssay, load_dms  # noqa: F401 (SHARED_ASSAYS)


# --------------------------------------------------------------------------- metrics
def ndcg(y_true, y_pred, top: float = 0.1) -> float:
    """NDCG over the top ``top`` fraction as ProteinGym defines it (``calc_ndcg``): gains are the
    measured scores min-max scaled to [0, 1], k = floor(top * n), ranks from the predicted order
    (ties broken by input order), log2(rank + 1) discount, normalised by the ideal ordering."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    span = y_true.max() - y_true.min() if len(y_true) else 0.0
    if span == 0:
        return float("nan")
    gains = (y_true - y_true.min()) / span
    k = int(np.floor(len(y_true) * top))

    def dcg(order):
        best = order[:k]
        return float(np.sum(gains[best] / np.log2(np.arange(2, len(best) + 2))))

    ideal = dcg(np.argsort(-gains, kind="stable"))
    return dcg(np.argsort(-y_pred, kind="stable")) / ideal if ideal > 0 else 0.0


def _row_spearman(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Spearman of each row pair of two (B x n) arrays."""
    rt, rp = rankdata(t, axis=1), rankdata(p, axis=1)
    rt -= rt.mean(1, keepdims=True)
    rp -= rp.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rt * rp).sum(1) / np.sqrt((rt ** 2).sum(1) * (rp ** 2).sum(1))


def bootstrap_spearman(y_true, *y_preds, n_boot: int = 1000, seed: int = 0,
                       level: float = 0.95) -> dict:
    """Percentile bootstrap intervals of Spearman for one or more predictions, resampling the
    variants with replacement (the same resamples for every prediction, so they are paired).

    Returns ``{"ci": [(lo, hi) per prediction], "delta_ci": (lo, hi) of pred[-1] - pred[0]}``.
    """
    y_true = np.asarray(y_true, float)
    preds = [np.asarray(p, float) for p in y_preds]
    draws = bootstrap_draws(lambda idx: np.stack([_row_spearman(y_true[idx], p[idx])
                                                  for p in preds], 1), len(y_true), n_boot, seed)

    def ci(x):
        return percentile_interval(x, level)

    return {"ci": [ci(d) for d in draws.T], "delta_ci": ci(draws[:, -1] - draws[:, 0])}


# --------------------------------------------------------------------------- scoring
@dataclass
class FitnessRun:
    """Scores of one assay before and after TTT on its wild type.

    ``variants``: mutant, n_mutations, DMS_score, score_before, score_after and the BLOSUM62
    baseline ``blosum62`` (``blosum62_scores``); ``marginals_*``:
    L x 20 masked marginals of the wild type (columns ``STANDARD_AA``); ``history``: the TTT
    table (step, loss, ...); ``seconds``: wall time of scoring + TTT (shared by assays with the
    same wild type when scored together by ``score_assays``).
    """

    assay: str
    wild_type: str
    method: str
    variants: pd.DataFrame
    marginals_before: np.ndarray
    marginals_after: np.ndarray
    history: pd.DataFrame
    pseudo_perplexity_before: float
    pseudo_perplexity_after: float
    n_total: int
    n_dropped: int
    ttt_steps: int
    seconds: float
    n_homologs: int = 0  #: homologs TTT drew copies from besides the wild type
    homolog_source: str | None = None

    def summary(self, n_boot: int = 1000, seed: int = 0) -> dict:
        """JSON-ready metrics: Spearman with paired bootstrap 95 % intervals (``n_boot``
        resamples, ``seed``), its change, NDCG at the top 10 %, the same per mutation order."""
        v = self.variants
        y = v.DMS_score.to_numpy()
        before, after = v.score_before.to_numpy(), v.score_after.to_numpy()
        boot = bootstrap_spearman(y, before, after, n_boot=n_boot, seed=seed)
        out = {"assay": self.assay, "method": self.method, "n_variants": len(v),
               "n_variants_total": self.n_total, "n_dropped": self.n_dropped,
               "wt_length": len(self.wild_type), "ttt_steps": self.ttt_steps,
               "n_homologs": self.n_homologs, "homolog_source": self.homolog_source,
               "spearman_before": spearman(y, before), "spearman_after": spearman(y, after),
               "spearman_before_ci": boot["ci"][0], "spearman_after_ci": boot["ci"][1]}
        out["delta_spearman"] = out["spearman_after"] - out["spearman_before"]
        if "blosum62" in v:
            out["spearman_blosum62"] = spearman(y, v.blosum62)
        out.update(delta_spearman_ci=boot["delta_ci"], ndcg_before=ndcg(y, before),
                   ndcg_after=ndcg(y, after),
                   pseudo_perplexity_before=self.pseudo_perplexity_before,
                   pseudo_perplexity_after=self.pseudo_perplexity_after,
                   per_order={str(k): {"n": len(g),
                                       "spearman_before": spearman(g.DMS_score, g.score_before),
                                       "spearman_after": spearman(g.DMS_score, g.score_after)}
                              for k, g in v.groupby("n_mutations")},
                   seconds=self.seconds)
        return jsonable(out, digits=4)


def blosum62_scores(mutants) -> np.ndarray:
    """Sum of BLOSUM62(wt, mt) over each mutant's substitutions (Henikoff & Henikoff 1992): a
    baseline that knows which amino-acid swaps are common in evolution, nothing of the protein."""
    from biotite.sequence.align import SubstitutionMatrix

    matrix = SubstitutionMatrix.std_protein_matrix()  # BLOSUM62
    return np.array([sum(matrix.get_score(p[0], p[-1]) for p in m.split(":")) for m in mutants],
                    dtype=float)


def unigram_scores(mutants, log_probs: dict[str, float]) -> np.ndarray:
    """Sum of log f(mt) - log f(wt) over each mutant's substitutions, with ``log_probs`` the
    amino-acid log frequencies of a model's training corpus (its pretraining ``.json``: the
    ``unigram_log_probs``): what a masked marginal would score if the model knew only amino-acid
    composition. A small language model above this null has learned something about its context."""
    return np.array([sum(log_probs[p[-1]] - log_probs[p[0]] for p in m.split(":")) for m in mutants],
                    dtype=float)


def _variant_scores(model, assay: DMSAssay, method: str, marginals, progress: bool):
    from tttlab.engine.scoring import score_mutants

    return score_mutants(model, assay.wild_type, assay.table.mutant, method,
                         marginals=marginals if method == "masked_marginals" else None,
                         progress=progress)


def score_assays(model, assays, cfg=None, method: str = "masked_marginals",
                 progress: bool = True, homologs=None) -> list[FitnessRun]:
    """Score loaded assays before and after TTT (``tttlab.ttt.customized``: the model is restored
    on exit). Assays sharing a wild type (e.g. GB1 singles and doubles) share one TTT run.
    ``homologs``: ``None`` (single-sequence TTT), an MSA file, ``"auto"`` or sequences, resolved
    for each wild type by ``data.homologs.homologs``."""
    from tqdm.auto import tqdm

    from tttlab.engine.config import preset_for
    from tttlab.engine.scoring import METHODS, masked_marginals, pseudo_perplexity
    from tttlab.data.homologs import homologs as homologs_of
    from tttlab.engine.ttt import customized

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    cfg = cfg or preset_for(model)
    assays = list(assays)
    groups: dict[str, list[int]] = {}
    for i, a in enumerate(assays):
        groups.setdefault(a.wild_type, []).append(i)
    runs: list[FitnessRun | None] = [None] * len(assays)
    for wt, members in tqdm(groups.items(), disable=not progress or len(groups) < 2,
                            desc="assays"):
        group = [assays[i] for i in members]
        start = time.perf_counter()
        mm_before = masked_marginals(model, wt)
        before = [_variant_scores(model, a, method, mm_before, progress) for a in group]
        history = pd.DataFrame([{"step": 0}])
        mm_after, after = mm_before, before
        family = None if homologs is None else homologs_of(wt, homologs, cfg.homolog_region)
        if cfg.steps:
            with customized(model, wt, cfg, progress=progress, homologs=family) as result:
                mm_after = masked_marginals(model, wt)
                after = [_variant_scores(model, a, method, mm_after, progress) for a in group]
            history = result.table()
        seconds = time.perf_counter() - start
        for i, a, b, c in zip(members, group, before, after):
            variants = a.table[["mutant", "n_mutations", "DMS_score"]].assign(
                score_before=b, score_after=c, blosum62=blosum62_scores(a.table.mutant))
            runs[i] = FitnessRun(
                a.name, wt, method, variants, mm_before, mm_after, history,
                pseudo_perplexity(model, wt, marginals=mm_before),
                pseudo_perplexity(model, wt, marginals=mm_after), a.n_total, len(a.dropped),
                cfg.steps, seconds, len(family) if family is not None else 0,
                family.source if family is not None else None)
    return runs


def evaluate_assay(model, dms_path, wt_fasta=None, cfg=None, method: str = "masked_marginals",
                   max_variants: int | None = None, seed: int = 0, progress: bool = True,
                   homologs=None) -> dict:
    """Zero-shot fitness prediction on one DMS assay before and after TTT, as a JSON-ready dict.

    Parameters
    ----------
    model : an ESM-2 model (``tttlab.load_model``); restored bit for bit before returning.
    dms_path : DMS file (.csv / .csv.gz), shared assay id, or a loaded ``DMSAssay``.
    wt_fasta : wild-type FASTA (default: inferred from the file and verified).
    cfg : ``TTTConfig`` (default ``tttlab.preset_for(model)``; ``steps=0`` skips TTT).
    method : ``masked_marginals`` | ``wt_marginals`` | ``pseudo_likelihood`` (L forward passes
        per variant: use ``max_variants``).
    max_variants, seed : fixed-seed subsample of the variants; ``seed`` also seeds the bootstrap.
    homologs : ``None``, an MSA file, ``"auto"`` or sequences: homolog-aware TTT
        (``score_assays``); the result then reports ``n_homologs`` and ``homolog_source``.

    Returns
    -------
    dict with ``assay``, ``n_variants``, ``spearman_before``, ``spearman_after`` (+ ``_ci``),
    ``delta_spearman`` (+ ``_ci``), ``spearman_blosum62`` (a model-free baseline),
    ``ndcg_before``/``_after``, ``pseudo_perplexity_before``/
    ``_after``, ``per_order`` ({"1": {...}, "2": {...}}), ``seconds`` and run details.
    """
    assay = dms_path if isinstance(dms_path, DMSAssay) else load_dms(dms_path, wt_fasta)
    run = score_assays(model, [assay.subsample(max_variants, seed)], cfg, method, progress,
                       homologs)[0]
    return {**run.summary(seed=seed), "max_variants": max_variants, "seed": seed}


def run_assays(model, assays, cfg=None, method: str = "masked_marginals",
               max_variants: int | None = None, seed: int = 0,
               progress: bool = True) -> list[FitnessRun]:
    """Load (ids, paths or ``DMSAssay``), subsample and score several assays (``score_assays``)."""
    loaded = [a if isinstance(a, DMSAssay) else load_dms(a) for a in assays]
    return score_assays(model, [a.subsample(max_variants, seed) for a in loaded], cfg, method,
                        progress)


def results_table(runs, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per assay (from ``FitnessRun``s or summary dicts): Spearman before / after with
    95 % intervals, its change, NDCG, pseudo-perplexity, singles and doubles."""
    rows = []
    for r in runs:
        s = r.summary(n_boot, seed) if isinstance(r, FitnessRun) else r
        row = {k: v for k, v in s.items() if not isinstance(v, (list, dict))}
        for k in ("spearman_before_ci", "spearman_after_ci", "delta_spearman_ci"):
            row[k + "_lo"], row[k + "_hi"] = s[k]
        for order, label in (("1", "singles"), ("2", "doubles")):
            part = s["per_order"].get(order, {})
            for k in ("n", "spearman_before", "spearman_after"):
                row[f"{label}_{k}"] = part.get(k)
        rows.append(row)
    return pd.DataFrame(rows)


#: the shared assays with a family alignment in the shared data (``families/``)
FAMILY_MSAS = {"SPG1_STRSG_Olson_2014_singles": "families/SPG1_STRSG_proteingym.a2m.gz",
               "BLAT_ECOLX_Stiffler_2015": "families/BLAT_ECOLX_colabfold.a3m.gz",
               "DLG4_RAT_McLaughlin_2012": "families/PF00595_PDZ_ardca.fasta.gz",
               "PABP_YEAST_Melamed_2013": "families/PF00076_RRM_pfam_seed.sto.gz"}


def compare_homolog_ttt(model, sources: dict, cfg=None, method: str = "masked_marginals",
                        max_variants: int | None = None, seed: int = 0, n_boot: int = 1000,
                        progress: bool = True) -> pd.DataFrame:
    """No TTT, single-sequence TTT and homolog TTT on each assay of ``sources`` ({assay id or
    file: MSA file, ``"auto"`` or sequences}), same TTT settings and seed.

    One row per assay: ``spearman_none``, ``spearman_single``, ``spearman_homolog``, the paired
    95 % bootstrap intervals of ``delta_single`` (single - none) and ``delta_homolog_vs_single``
    (homolog - single) on the same resamples of variants, ``n_homologs`` and
    ``effective_homologs`` (the sum of the redundancy weights: the MSA depth TTT sees)."""
    from tttlab.data.homologs import homologs as homologs_of
    from tttlab.engine.config import preset_for

    cfg = cfg or preset_for(model)
    rows = []
    for assay_id, source in sources.items():
        assay = load_dms(assay_id).subsample(max_variants, seed)
        family = homologs_of(assay.wild_type, source, cfg.homolog_region)
        single = score_assays(model, [assay], cfg, method, progress)[0]
        homolog = score_assays(model, [assay], cfg, method, progress, homologs=family)[0]
        y = single.variants.DMS_score.to_numpy()
        none, one, fam = (single.variants.score_before.to_numpy(),
                          single.variants.score_after.to_numpy(),
                          homolog.variants.score_after.to_numpy())
        gain = bootstrap_spearman(y, none, one, n_boot=n_boot, seed=seed)["delta_ci"]
        extra = bootstrap_spearman(y, one, fam, n_boot=n_boot, seed=seed)["delta_ci"]
        rows.append({"assay": assay.name, "n_variants": len(y), "n_homologs": len(family),
                     "effective_homologs": round(float(sum(family.weights)), 1),
                     "homolog_source": family.source,
                     "spearman_none": spearman(y, none), "spearman_single": spearman(y, one),
                     "spearman_homolog": spearman(y, fam),
                     "delta_single": spearman(y, one) - spearman(y, none),
                     "delta_single_lo": gain[0], "delta_single_hi": gain[1],
                     "delta_homolog_vs_single": spearman(y, fam) - spearman(y, one),
                     "delta_homolog_vs_single_lo": extra[0],
                     "delta_homolog_vs_single_hi": extra[1],
                     "pseudo_perplexity_single": single.pseudo_perplexity_after,
                     "pseudo_perplexity_homolog": homolog.pseudo_perplexity_after})
    return pd.DataFrame(rows)


def describe_gains(table: pd.DataFrame) -> str:
    """One sentence on a ``results_table``: on how many assays TTT raised / lowered Spearman (the
    paired 95 % interval of the change excludes 0) or made no detectable difference, and the
    Spearman correlation between pseudo-perplexity before TTT and the change, across assays."""
    lo, hi = table["delta_spearman_ci_lo"], table["delta_spearman_ci_hi"]
    up, down = int((lo > 0).sum()), int((hi < 0).sum())
    text = (f"TTT raised Spearman on {up} of {len(table)} assays, lowered it on {down}, and made "
            f"no detectable difference (95 % interval includes 0) on {len(table) - up - down}")
    if len(table) >= 3:
        rho = spearman(table["pseudo_perplexity_before"], table["delta_spearman"])
        text += f"; across assays, Spearman(perplexity before, change) = {rho:.2f}"
    return text + "."
