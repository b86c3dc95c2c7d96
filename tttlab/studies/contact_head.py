"""The ESM-2 contact head: its features (every attention map, symmetrised and APC-corrected, as
fair-esm's ``ContactPredictionHead`` computes them) and fitting its logistic regression on the
pfam40 TRAIN split for a model shipped without one (tttlab-mini): ``tttlab structure
fit-head``.
After Rao et al., "Transformer protein language models are unsupervised structure learners" (2021).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tttlab.engine.scoring import check_sequence, encode, max_residues, model_device, scoring_mode
from tttlab.data.structures import (PFAM40_TEST, PFAM40_TRAIN, load_target, pair_indices,
                                    pfam40_path, read_pdb_target)

FIT_MIN_SEP = 6  #: pairs closer in sequence than this are left out of the head's training data


def tokens_for(model, seq: str):
    """BOS + ``seq`` + EOS as a 1 x (L + 2) batch on the model's device (at most 1022 residues)."""
    seq = check_sequence(seq)
    if len(seq) > max_residues(model):
        raise ValueError(f"contact prediction takes at most {max_residues(model)} residues, "
                         f"got {len(seq)}")
    return encode(model.alphabet, seq, model_device(model))[None]


def attention_maps(model, seq: str):
    """(layers * heads) x L x L attention probabilities between residues (BOS/EOS rows and
    columns dropped), layer-major: map ``k`` is layer ``k // heads``, head ``k % heads``."""
    tokens = tokens_for(model, seq)
    with scoring_mode(model):
        attn = model(tokens, need_head_weights=True)["attentions"].float()
    return attn[0, :, :, 1:-1, 1:-1].flatten(0, 1).clone()


def contact_features(model, seq: str) -> np.ndarray:
    """L x L x (layers * heads): every attention map without BOS/EOS, symmetrised and
    APC-corrected, exactly what fair-esm's ``ContactPredictionHead`` feeds its regression."""
    from esm.modules import apc, symmetrize

    attn = attention_maps(model, seq)[None]  # 1 x (layers * heads) x L x L
    return apc(symmetrize(attn))[0].permute(1, 2, 0).cpu().numpy()


def strongest_feature(model) -> dict:
    """The attention map the contact regression weighs most: ``index``, ``layer``, ``head`` (both
    0-based) and ``weight``."""
    weight = model.contact_head.regression.weight.detach().cpu().numpy()[0]
    k = int(np.abs(weight).argmax())
    return {"index": k, "layer": k // model.attention_heads, "head": k % model.attention_heads,
            "weight": float(weight[k])}


def _l1_logistic(C: float):
    import inspect

    from sklearn.linear_model import LogisticRegression

    old = inspect.signature(LogisticRegression).parameters["penalty"].default != "deprecated"
    kind = {"penalty": "l1"} if old else {"l1_ratio": 1.0}
    return LogisticRegression(C=C, solver="liblinear", random_state=0, max_iter=1000, **kind)


def head_training_data(model, targets, min_sep: int = FIT_MIN_SEP, progress: bool = True):
    """(X, y, groups): contact features and 0/1 labels of every pair ``j - i >= min_sep`` with a
    known truth, and the protein index of each row."""
    from tqdm.auto import tqdm

    xs, ys, groups = [], [], []
    for k, target in enumerate(tqdm(list(targets), disable=not progress, desc="features")):
        target = load_target(target)
        true = target.contacts()
        i, j = pair_indices(true, min_sep)
        xs.append(contact_features(model, target.sequence)[i, j])
        ys.append(true[i, j])
        groups.append(np.full(len(i), k))
    return np.concatenate(xs), np.concatenate(ys).astype(int), np.concatenate(groups)


def fit_contact_head(model, targets, C: float = 0.1, min_sep: int = FIT_MIN_SEP,
                     progress: bool = True) -> dict:
    """Fit the contact head's logistic regression on ``targets`` and load it into ``model``.

    L1-penalised logistic regression (liblinear, as the ESM-1b contact regression was L1 and fit on
    20 proteins, Rao et al. 2021) on standardised features; the scaling is folded back into the
    head's weight and bias, so the stock ``ContactPredictionHead`` reproduces the fit exactly.
    Returns a summary dict (proteins, pairs, contacts, non-zero weights, C).
    """
    import torch

    X, y, _ = head_training_data(model, targets, min_sep, progress)
    mean, std = X.mean(axis=0), X.std(axis=0) + 1e-12
    clf = _l1_logistic(C).fit((X - mean) / std, y)
    weight = clf.coef_[0] / std
    bias = float(clf.intercept_[0] - (weight * mean).sum())
    reg = model.contact_head.regression
    with torch.no_grad():
        reg.weight.copy_(torch.as_tensor(weight, dtype=reg.weight.dtype)[None])
        reg.bias.fill_(bias)
    return {"proteins": len(list(targets)), "pairs": int(len(y)), "contacts": int(y.sum()),
            "nonzero_weights": int((clf.coef_ != 0).sum()), "features": int(X.shape[1]), "C": C}


def regression_path(model_name: str) -> Path:
    """Where fair-esm looks for a local checkpoint's contact regression: beside the ``.pt``."""
    from tttlab.engine.models import local_path

    pt = local_path(model_name)
    if pt.suffix != ".pt":
        raise ValueError(f"{model_name}: give --out for a downloaded model (no local .pt file)")
    return pt.with_name(pt.stem + "-contact-regression.pt")


def fit_head_command(model_name: str = "tttlab-mini", out=None, C: float = 0.1, device=None,
                     progress: bool = True) -> dict:
    """Fit the contact head on ``PFAM40_TRAIN`` and write ``<model>-contact-regression.pt`` beside
    the checkpoint (``models.save_contact_regression``). Then reload the checkpoint through
    fair-esm and check that the head it built has the fitted weights and that its
    ``predict_contacts`` equals sigmoid(features . w + b). Deterministic (fp32 CPU features,
    liblinear with a fixed seed). Returns the fit summary plus ``path`` and ``max_abs_diff``."""
    import torch

    from tttlab.engine.models import load_model, save_contact_regression

    out = Path(out) if out else regression_path(model_name)
    model, _ = load_model(model_name, device=device, contact_regression=False)  # it is replaced
    summary = fit_contact_head(model, [pfam40_path(n) for n in PFAM40_TRAIN], C=C,
                               progress=progress)
    save_contact_regression(model, out)
    checkpoint = out.with_name(out.name.replace("-contact-regression", ""))
    if checkpoint.is_file():  # stock fair-esm loading picks the regression file up
        model, _ = load_model(checkpoint, device=device)
    reg = model.contact_head.regression
    if not torch.equal(reg.weight.detach().cpu(), torch.load(out, weights_only=True)["model"][
            "contact_head.regression.weight"]):
        raise RuntimeError(f"{out}: the reloaded contact head does not hold the fitted weights")
    seq = read_pdb_target(pfam40_path(PFAM40_TEST[0])).sequence
    with scoring_mode(model):
        stock = model.predict_contacts(tokens_for(model, seq))[0].float().cpu().numpy()
    w, b = reg.weight.detach().cpu().double().numpy()[0], float(reg.bias.detach())
    mine = 1 / (1 + np.exp(-(contact_features(model, seq).astype(float) @ w + b)))
    diff = float(np.abs(stock - mine).max())
    if diff > 1e-4:
        raise RuntimeError(f"predict_contacts differs from the fitted regression ({diff:.1e})")
    return {**summary, "path": str(out), "max_abs_diff": diff}
