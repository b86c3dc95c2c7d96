"""The one TTT configuration: a frozen dataclass whose defaults are the published ProteinTTT settings for
ESM-2 35M (Bushuiev et al., arXiv 2411.02109), plus named presets per model size.

Change a value with ``dataclasses.replace(cfg, steps=10)`` or ``preset("esm2_t33_650M_UR50D", steps=10)``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

LOSSES = ("all_tokens", "masked_tokens")
TRAINABLE = ("all", "lora")
MASK_COUNTS = ("exact", "bernoulli")
REPLACE_VOCABS = ("alphabet", "amino_acids")
CROPS = ("tokens", "residues")
LORA_INITS = ("gaussian", "kaiming")
HOMOLOG_REGIONS = ("full", "aligned")


@dataclass(frozen=True)
class TTTConfig:
    """Per-protein test-time training settings (defaults: ProteinTTT, ESM-2 35M).

    Attributes
    ----------
    lr, momentum, weight_decay : plain SGD, as published (momentum 0, weight decay 0).
    batch_size, grad_accum_steps : masked copies per micro-batch and micro-batches per optimiser step
        (4 x 16 = 64 masked copies of the protein per step). As in the published code, the step's
        gradient is the SUM of the micro-batch gradients (each micro-batch's mean loss, unscaled).
    steps : optimiser steps (30).
    mask_ratio, bert_replace, bert_keep : 15 % of residues selected; of those 10 % replaced by a random
        token, 10 % kept, the rest masked (BERT 80/10/10).
    mask_count : ``"exact"`` (published code: exactly ``int(mask_ratio * n)`` of the copy's ``n``
        residues, at least one, drawn without replacement) or ``"bernoulli"`` (each residue
        selected with probability ``mask_ratio``, at least one; ESM-2 pretraining's rule).
    replace_vocab : where random replacements come from: ``"alphabet"`` (published code: the
        alphabet's 27 non-special tokens, the 20 amino acids plus X, B, U, Z, O, ``.`` and ``-``)
        or ``"amino_acids"`` (the 20 standard amino acids).
    crop_size, crop : copy length in tokens. ``crop="tokens"`` (published code): a protein whose
        BOS + residues + EOS exceed ``crop_size`` tokens gets, per copy, a random raw window of
        ``crop_size`` tokens of that row (so a window may lack BOS and/or EOS); ``"residues"``:
        BOS + a random window of ``crop_size - 2`` residues + EOS.
    loss : ``"all_tokens"`` (published code: cross-entropy averaged over every token of the corrupted
        copy, masked or not, BOS/EOS included) or ``"masked_tokens"`` (only the selected positions,
        the BERT/ESM-2 loss; averaged per copy, then over copies, as ProteinTTT's ``cross_entropy``).
    trainable : ``"all"`` (every parameter but the token embedding, which is tied to the LM head
        and so stays frozen too) or ``"lora"`` (peft LoRA adapters on q/k/v/out projections).
    lora_rank, lora_alpha, lora_init : LoRA size, peft's ``lora_alpha`` (the branch is scaled by
        ``lora_alpha / lora_rank``) and initialisation. Defaults are ProteinTTT's adapter
        (``lora_diffusion`` with ``r=8, scale=32``: the branch scaled by 32, so peft's alpha is
        32 x 8 = 256; down-projection Gaussian with std 1/r, up-projection zero, i.e. peft's
        ``"gaussian"``); ``"kaiming"`` is peft's default initialisation.
    homolog_target_share, homolog_region : with homologs (``customize(..., homologs=...)``), the
        chance that a copy is the target rather than a homolog (0.5, tttlab's choice: the
        published MSA mode draws uniformly over the MSA's rows, the target being one of them), and
        which part of each homolog is used: ``"aligned"`` (its residues in the target's alignment
        columns; gaps and insertions dropped) or ``"full"`` (its whole sequence, gaps removed). The
        two gave the same Spearman within their paired intervals on the four assays with a family
        alignment (``benchmarks/bench_homologs.py --regions``); ``"aligned"`` is the default as
        its copies are never longer than the target (a 55-residue GB1 drew 370-residue protein G
        homologs whole).
    eval_every : compute pseudo-perplexity every N steps (and at step 0 and at the end); 0 = never.
    keep_best, keep_best_by, keep_best_mode : after training, load the step (step 0, the untouched
        model, included) with the best value of ``keep_best_by`` in the history: ``"min"``imum
        pseudo-perplexity by default (needs ``eval_every``), or any value the ``callback`` returns,
        e.g. ``keep_best_by="plddt", keep_best_mode="max"`` (ESMFold's confidence, as published).
    amp : bf16 autocast on CUDA (ignored on CPU, which always runs fp32).
    seed : seeds a local generator for cropping and masking; runs are repeatable.
    """

    lr: float = 4e-4
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 4
    grad_accum_steps: int = 16
    steps: int = 30
    mask_ratio: float = 0.15
    bert_replace: float = 0.1
    bert_keep: float = 0.1
    mask_count: str = "exact"
    replace_vocab: str = "alphabet"
    crop_size: int = 1024
    crop: str = "tokens"
    loss: str = "all_tokens"
    trainable: str = "all"
    lora_rank: int = 8
    lora_alpha: float = 256.0
    lora_init: str = "gaussian"
    homolog_target_share: float = 0.5
    homolog_region: str = "aligned"
    eval_every: int = 0
    keep_best: bool = False
    keep_best_by: str = "pseudo_perplexity"
    keep_best_mode: str = "min"
    amp: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        for name, allowed in (("trainable", TRAINABLE), ("mask_count", MASK_COUNTS),
                              ("replace_vocab", REPLACE_VOCABS), ("crop", CROPS),
                              ("lora_init", LORA_INITS), ("homolog_region", HOMOLOG_REGIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("batch_size", "grad_accum_steps", "lora_rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.crop_size < 3:
            raise ValueError(f"crop_size must be >= 3 tokens, got {self.crop_size}")
        if not 0 <= self.homolog_target_share <= 1:
            raise ValueError("homolog_target_share must be in [0, 1], got "
                             f"{self.homolog_target_share}")
        if self.steps < 0 or self.eval_every < 0:
            raise ValueError("steps and eval_every must be >= 0")
        if not 0 < self.mask_ratio <= 1 or self.bert_replace + self.bert_keep > 1:
            raise ValueError("need 0 < mask_ratio <= 1 and bert_replace + bert_keep <= 1")
        if self.keep_best_mode not in ("min", "max"):
            raise ValueError(f"keep_best_mode must be 'min' or 'max', got {self.keep_best_mode!r}")
        if self.keep_best and self.keep_best_by == "pseudo_perplexity" and not self.eval_every:
            raise ValueError("keep_best needs eval_every > 0 (pseudo-perplexity picks the best step)")


#: ESM-2 shapes (layers, width, heads) and parameter counts of the six fair-esm checkpoints
ESM2_SHAPES: dict[str, tuple[int, int, int]] = {
    "esm2_t6_8M_UR50D": (6, 320, 20),
    "esm2_t12_35M_UR50D": (12, 480, 20),
    "esm2_t30_150M_UR50D": (30, 640, 20),
    "esm2_t33_650M_UR50D": (33, 1280, 20),
    "esm2_t36_3B_UR50D": (36, 2560, 40),
    "esm2_t48_15B_UR50D": (48, 5120, 40),
}

#: The presets. Published (ProteinTTT, ``proteinttt/models/esm2.py`` and ``esmfold.py``): ESM-2 35M
#: (the ``TTTConfig`` defaults: SGD lr 4e-4, 4 copies x 16 accumulation, all parameters), ESM-2 650M
#: (lr 4e-5, 4 x 4) and ESMFold, whose language model is ESM-2 3B (LoRA rank 8 with the branch x 32,
#: lr 4e-4, 4 x 4, its default loss: cross-entropy on the masked tokens). The other sizes follow
#: one stated rule (on nominal sizes), not a tuning run:
#:
#: - 8M and 150M (full fine-tuning): batch and accumulation of the nearest published size in log
#:   parameter count (35M for both: 150M / 35M = 4.29 < 650M / 150M = 4.33), and the learning
#:   rate on the power law through the two published full-fine-tuning points, lr = 4e-4 x
#:   (N / 35M)^-0.788 (0.788 = log(10) / log(650 / 35): ten times smaller from 35M to 650M),
#:   rounded to two digits: 8M -> 1.3e-3, 150M -> 1.3e-4.
#: - 3B: ESMFold's LoRA recipe as published (the paper's only 3B setting); 15B: the same adapters,
#:   lr on the same power law from 3B: 4e-4 x (15B / 3B)^-0.788 -> 1.1e-4. Full fine-tuning of
#:   3B/15B would need 8 bytes per parameter for weights + gradients alone (``tttlab models``).
#:
#: tttlab-mini's was chosen on held-out validation sequences of its pretraining run (never an evaluation
#: protein) by ``benchmarks/tune_mini_preset.py``: with gradients summed over micro-batches as published,
#: 30 SGD steps of 4 x 4 copies at lr 0.4 lowered the pseudo-perplexity of the sequences' Swiss-Prot
#: homologs (30-70 % identity, never seen by TTT) most: 2.7 % (lr 0.01 / 0.04 / 0.1 / 0.2 / 0.8: 0.1 /
#: -0.3 / 0.6 / 2.0 / 1.5 %), and that of the sequences themselves by 21 % (``benchmarks/results/tune_mini_preset.json``). A
#: 4.8 M-parameter model trained on 10^4 times fewer tokens than ESM-2 needs far larger steps than 35M's 4e-4.
_LORA = dict(trainable="lora", lora_rank=8, lora_alpha=256.0, batch_size=4, grad_accum_steps=4,
             loss="masked_tokens")
PRESETS: dict[str, TTTConfig] = {
    "esm2_t6_8M_UR50D": TTTConfig(lr=1.3e-3),
    "esm2_t12_35M_UR50D": TTTConfig(),
    "esm2_t30_150M_UR50D": TTTConfig(lr=1.3e-4),
    "esm2_t33_650M_UR50D": TTTConfig(lr=4e-5, batch_size=4, grad_accum_steps=4),
    "esm2_t36_3B_UR50D": TTTConfig(lr=4e-4, **_LORA),
    "esm2_t48_15B_UR50D": TTTConfig(lr=1.1e-4, **_LORA),
    "tttlab-mini": TTTConfig(lr=0.4, batch_size=4, grad_accum_steps=4),
    # ESMFold (``engine.folding``): ProteinTTT's DEFAULT_ESMFOLD_TTT_CFG (proteinttt/models/esmfold.py,
    # commit fb33da6): SGD lr 4e-4, batch 4, 4 accumulation steps, 30 steps, LoRA rank 8 with the
    # branch x 32 (lora_diffusion's ``scale``; peft alpha 256, Gaussian init) on q/k/v/out of every
    # attention block of the language model, base loss "cross_entropy" (masked tokens); the step
    # kept is the one with the highest mean pLDDT, step 0 included (automatic_best_state_reset)
    "esmfold_v1": TTTConfig(lr=4e-4, steps=30, keep_best=True, keep_best_by="plddt",
                            keep_best_mode="max", **_LORA),
}
#: where each ESM-2 preset comes from (``tttlab models`` prints it)
PRESET_SOURCES: dict[str, str] = {
    "esm2_t6_8M_UR50D": "rule: 35M batch, lr power law",
    "esm2_t12_35M_UR50D": "published (ProteinTTT ESM-2 35M)",
    "esm2_t30_150M_UR50D": "rule: 35M batch, lr power law",
    "esm2_t33_650M_UR50D": "published (ProteinTTT ESM-2 650M)",
    "esm2_t36_3B_UR50D": "published (ProteinTTT ESMFold, LoRA)",
    "esm2_t48_15B_UR50D": "rule: ESMFold LoRA, lr power law",
    "tttlab-mini": "tuned on held-out sequences' homologs",
    "esmfold_v1": "published (ProteinTTT ESMFold, LoRA, best step by pLDDT)",
}
PRESETS["esm2_tttlab_mini"] = PRESETS["tttlab-mini"]  # its file stem (data/models/...pt)


def preset(model_name: str = "tttlab-mini", **overrides) -> TTTConfig:
    """The preset for ``model_name`` (a preset name, or a local checkpoint path whose file stem is
    one, e.g. ``.../esm2_t33_650M_UR50D.pt``; published 35M defaults when unknown), with
    ``overrides``.

    Every ESM-2 size has its own: 35M, 650M and 3B (ESMFold's LoRA) are ProteinTTT's published
    settings; 8M, 150M and 15B follow a stated rule (learning rate on the power law through the
    published points, batch of the nearest published size; see ``PRESETS``' comment and
    ``PRESET_SOURCES``).

    ``"esmfold_v1"`` (``tttlab fold``) is ProteinTTT's ``DEFAULT_ESMFOLD_TTT_CFG``
    (``proteinttt/models/esmfold.py``, commit fb33da6), value by value: SGD and momentum 0 (its
    ``TTTConfig`` defaults), ``lr=4e-4``, ``batch_size=4``, ``ags=4``, ``steps=30``,
    ``lora_rank=8``, ``lora_alpha=32.0`` (lora_diffusion's ``scale``: the branch x 32, i.e.
    peft ``lora_alpha=256``; its up-projection starts at zero, its down-projection Gaussian with
    std 1/r), LoRA on every ``MultiheadAttention``'s linear layers (q, k, v, out), loss
    ``cross_entropy`` (its default: the masked tokens, mean per copy then over copies), 15 %
    masking 80/10/10 and 1,024-token crops (defaults), and ``automatic_best_state_reset`` keeping
    the step with the highest confidence, the mean pLDDT of ``_ttt_eval_step`` (step 0 included,
    ties to the earlier step)."""
    known = {f.name for f in fields(TTTConfig)}
    bad = set(overrides) - known
    if bad:
        raise ValueError(f"unknown TTTConfig field(s): {', '.join(sorted(bad))}")
    name = str(model_name)
    key = name if name in PRESETS else Path(name).stem
    return replace(PRESETS.get(key, TTTConfig()), **overrides)


def preset_for(model, **overrides) -> TTTConfig:
    """``preset`` of the name or path ``tttlab.load_model`` loaded the model from (its
    ``model_name``), with ``overrides``; tttlab-mini's for a model built otherwise
    (``build_esm2``)."""
    return preset(getattr(model, "model_name", "tttlab-mini"), **overrides)
