"""Structure prediction with TTT (arXiv 2411.02109, ESMFold): customise ESMFold's language model on
the protein, fold after every step (step 0, the untouched model, included), keep the step with the
highest mean pLDDT, and score the predictions against an experimental chain by TM-score (TM-align,
``tmtools``) and LDDT (``biotite``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from tttlab.data.structures import align_to_chain, chain_residues, read_chain
from tttlab.engine.config import TTTConfig, preset
from tttlab.engine.folding import FoldingModel, Prediction
from tttlab.engine.ttt import customized


@dataclass
class FoldResult:
    """One protein folded before, during and after TTT."""

    sequence: str
    history: list[dict]  #: per step: step, loss (None at step 0), plddt, seconds
    best_step: int
    predictions: dict[int, Prediction] = field(repr=False)  #: step -> prediction kept
    scores: dict[int, dict] = field(default_factory=dict)  #: step -> tm_score, lddt
    seconds: float = 0.0

    @property
    def last_step(self) -> int:
        return self.history[-1]["step"]

    @property
    def plddt_per_step(self) -> list[float]:
        return [h["plddt"] for h in self.history]

    @property
    def before(self) -> Prediction:
        return self.predictions[0]

    @property
    def after(self) -> Prediction:
        """The prediction of the step kept (highest mean pLDDT)."""
        return self.predictions[self.best_step]

    def table(self):
        """The per-step history (and scores, when a reference was given) as a DataFrame."""
        import pandas as pd

        rows = [{**h, **self.scores.get(h["step"], {})} for h in self.history]
        return pd.DataFrame(rows)

    def scores_table(self):
        """Before TTT, at the step kept and at the last step: the step, its mean pLDDT and, with a
        reference, TM-score and LDDT (a DataFrame indexed by ``before``, ``after``, ``last``)."""
        import pandas as pd

        rows = {}
        for label, step in (("before", 0), ("after", self.best_step), ("last", self.last_step)):
            scores = {k: v for k, v in self.scores.get(step, {}).items() if k != "aligned_residues"}
            rows[label] = {"step": step, "mean_plddt": self.history[step]["plddt"], **scores}
        return pd.DataFrame(rows).T

    def summary(self) -> dict:
        """The numbers ``tttlab fold --json`` prints: pLDDT before/after, the step kept, pLDDT and
        loss per step and, with a reference, TM-score and LDDT before, after (the step kept) and
        at the last step."""
        out = {"length": len(self.sequence), "plddt_before": round(self.before.mean_plddt, 3),
               "plddt_after": round(self.after.mean_plddt, 3), "best_step": self.best_step,
               "plddt_per_step": self.plddt_per_step,  # unrounded: best_step is their argmax
               "loss_per_step": [None if h["loss"] is None else round(h["loss"], 4)
                                 for h in self.history]}
        for label, step in (("before", 0), ("after", self.best_step), ("last", self.last_step)):
            for metric, value in self.scores.get(step, {}).items():
                out[f"{metric}_{label}"] = round(value, 4) if isinstance(value, float) else value
        return out


def fold_with_ttt(model: FoldingModel, sequence: str, cfg: TTTConfig | None = None,
                  reference=None, chain: str | None = None, keep_all: bool = False,
                  progress: bool = True, **overrides) -> FoldResult:
    """Fold ``sequence`` with ESMFold before and after test-time training of its language model.

    After step 0 and every optimiser step the protein is folded and its mean pLDDT recorded; the
    model state of the step with the highest one is kept (ties: the earlier step), as in
    ProteinTTT. Predictions of step 0, the kept step and the last step are returned (every step's
    with ``keep_all``). With ``reference`` (a PDB/mmCIF file; ``chain`` or its first protein
    chain) each of those is scored by TM-score and LDDT (``compare_to_reference``). The model is
    restored bit for bit afterwards.

    ``cfg`` defaults to the published recipe, ``preset("esmfold_v1")``; ``overrides`` replace its
    fields (e.g. ``steps=3``); the step kept is always the one with the highest mean pLDDT.
    """
    cfg = replace(cfg or preset("esmfold_v1"),
                  **{**overrides, "keep_best": True, "keep_best_by": "plddt", "keep_best_mode": "max"})
    ref_atoms = None if reference is None else read_chain(reference, chain)[0]
    kept: dict[int, Prediction] = {}
    start = time.perf_counter()

    def after_step(step, lm):
        pred = model.predict(sequence)
        kept[step] = pred
        return {"plddt": pred.mean_plddt}

    with customized(model.language_model, sequence, cfg, progress=progress,
                    callback=after_step) as result:
        history = [{k: h[k] for k in ("step", "loss", "plddt", "seconds")}
                   for h in result.history]
        best = result.best_step  # never None: step 0 is always folded and kept if best
    last = history[-1]["step"]
    wanted = set(kept) if keep_all else {0, best, last}
    predictions = {s: kept[s] for s in sorted(wanted)}
    out = FoldResult(sequence=result.sequence, history=history, best_step=best,
                     predictions=predictions, seconds=time.perf_counter() - start)
    if ref_atoms is not None:
        out.scores = {s: compare_to_reference(p, ref_atoms) for s, p in predictions.items()}
    return out


def compare_to_reference(prediction: Prediction, reference_atoms) -> dict:
    """TM-score and LDDT of ``prediction`` against an experimental chain (biotite atoms, e.g.
    ``data.structures.read_chain(path, chain)[0]``).

    * ``tm_score``: TM-align (``tmtools``) of the two C-alpha traces, normalised by the length of
      the reference (its residues with a C-alpha).
    * ``lddt``: C-alpha LDDT (biotite, 15 A inclusion radius, 0.5/1/2/4 A thresholds) over the
      residue pairs of the global sequence alignment the contact study uses
      (``data.structures.align_to_chain``: BLOSUM62, gaps -10/-1, free end gaps).
    * ``aligned_residues``: how many residues that alignment pairs.
    """
    import biotite.structure as struc
    import tmtools

    ref, pred, _, pairs = _paired_residues(prediction, reference_atoms)
    pred_ca = np.array([r["ca"] for r in pred])
    tm = tmtools.tm_align(pred_ca, np.array([r["ca"] for r in ref]),
                          "".join(r["letter"] for r in pred),
                          "".join(r["letter"] for r in ref)).tm_norm_chain2
    ca_ref = struc.array([_ca_atom(ref[k]["ca"], n) for n, (_, k) in enumerate(pairs)])
    ca_pred = struc.array([_ca_atom(pred_ca[i], n) for n, (i, _) in enumerate(pairs)])
    lddt = float(struc.lddt(ca_ref, ca_pred))
    return {"tm_score": float(tm), "lddt": lddt, "aligned_residues": len(pairs)}


def confidence_table(model: FoldingModel, structures, progress: bool = True):
    """Fold each experimental chain's sequence once (no TTT): a DataFrame of ``id``, ``path``,
    ``sequence``, ``length``, ``mean_plddt``, ``tm_score``, ``lddt``, lowest mean pLDDT first, the
    proteins the model is least sure of, where the paper found TTT to help most."""
    import pandas as pd
    from tqdm.auto import tqdm

    from tttlab.data.structures import read_pdb_target

    rows = []
    for path in tqdm(list(structures), disable=not progress, desc="fold", leave=False):
        target = read_pdb_target(path)
        seq = target.sequence.replace("X", "")  # residues missing from the chain are not folded
        pred = model.predict(seq)
        scores = compare_to_reference(pred, target.atoms)
        rows.append({"id": target.id, "path": str(path), "sequence": seq, "length": len(seq),
                     "mean_plddt": pred.mean_plddt, "tm_score": scores["tm_score"],
                     "lddt": scores["lddt"]})
    return pd.DataFrame(rows).sort_values("mean_plddt", kind="stable").reset_index(drop=True)


def superimposed(prediction: Prediction, reference_atoms):
    """The predicted structure (biotite atoms) moved onto the reference by the least-squares fit of
    the C-alpha atoms the sequence alignment pairs (``align_to_chain``), for drawing them together."""
    import biotite.structure as struc

    ref, pred, pred_atoms, pairs = _paired_residues(prediction, reference_atoms)
    fixed = np.array([ref[k]["ca"] for _, k in pairs])
    mobile = np.array([pred[i]["ca"] for i, _ in pairs])
    _, transform = struc.superimpose(fixed, mobile)
    return transform.apply(pred_atoms)


def _paired_residues(prediction: Prediction, reference_atoms):
    """The reference's residues with a C-alpha, the prediction's residues and atoms, and the
    (prediction, reference) residue index pairs of ``align_to_chain``; fewer than 3 of either is a
    one-line ``ValueError``."""
    ref = [r for r in chain_residues(reference_atoms) if np.isfinite(r["ca"]).all()]
    if len(ref) < 3:
        raise ValueError("the reference chain has fewer than 3 residues with a C-alpha atom")
    pred_atoms = prediction.atoms()
    pairs = align_to_chain(prediction.sequence, ref)
    if len(pairs) < 3:
        raise ValueError("the sequence and the reference chain share fewer than 3 aligned residues")
    return ref, chain_residues(pred_atoms), pred_atoms, pairs


def _ca_atom(coord, number: int):
    import biotite.structure as struc

    return struc.Atom(coord, chain_id="A", res_id=number + 1, res_name="ALA", atom_name="CA",
                      element="C")


def write_pdbs(result: FoldResult, out_dir, name: str, every_step: bool = False) -> dict[str, str]:
    """Write the kept step's prediction as ``<name>.pdb`` and step 0's as ``<name>.step0.pdb`` (and
    every kept step's as ``<name>.stepN.pdb`` with ``every_step``) under ``out_dir``; returns
    label -> path."""
    from tttlab.common.files import atomic_write_text

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"pdb": out_dir / f"{name}.pdb", "pdb_before": out_dir / f"{name}.step0.pdb"}
    texts = {"pdb": result.after.pdb, "pdb_before": result.before.pdb}
    if every_step:
        for step, pred in result.predictions.items():
            paths[f"pdb_step{step}"] = out_dir / f"{name}.step{step}.pdb"
            texts[f"pdb_step{step}"] = pred.pdb
    for label, path in paths.items():
        atomic_write_text(path, texts[label])
    return {label: str(path) for label, path in paths.items()}
