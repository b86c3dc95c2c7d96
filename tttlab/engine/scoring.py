"""Scoring engine: masked marginals, pseudo-perplexity, wild-type marginals, mutant scores and
representations from an ESM-2 model, batched under ``torch.inference_mode``.

Masked marginals and the sliding window for long proteins follow ProteinGym (Notin et al. 2023) and
Meier et al. 2021 (ESM-1v); pseudo-perplexity as in Salazar et al. 2020 / the ProteinTTT paper.
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager, nullcontext

import numpy as np
import torch

from tttlab.common.sequences import MAX_RESIDUES, STANDARD_AA, check_sequence  # noqa: F401
_MUTATION = re.compile(r"^([A-Z])(\d+)([A-Z])$")


# ------------------------------------------------------------------------------ inputs
def encode(alphabet, seq: str, device=None) -> torch.Tensor:
    """BOS + residues + EOS as a 1-D long tensor."""
    idx = [alphabet.cls_idx] + [alphabet.get_idx(c) for c in seq] + [alphabet.eos_idx]
    return torch.tensor(idx, dtype=torch.long, device=device)


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def autocast_for(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA, nothing (fp32) elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@contextmanager
def scoring_mode(model, amp: bool = True):
    """``torch.inference_mode`` + eval mode + bf16 autocast on CUDA; on exit restores the training
    flag and drops the rotary-embedding caches built here (inference tensors cannot enter autograd)."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast_for(model_device(model), amp):
            yield
    finally:
        model.train(was_training)
        for module in model.modules():
            if hasattr(module, "_seq_len_cached"):
                module._seq_len_cached = module._cos_cached = module._sin_cached = None


def max_residues(model) -> int:
    """Longest stretch of residues the model takes at once (ESM-2: 1024 tokens - BOS - EOS)."""
    return MAX_RESIDUES


def optimal_window(mutation_position_relative: int, seq_len_wo_special: int,
                   model_window: int) -> tuple[int, int]:
    """ProteinGym's ``get_optimal_window`` (``proteingym/utils/scoring_utils.py``): the
    ``[start, end)`` slice of a length-``seq_len_wo_special`` row that is scored for position
    ``mutation_position_relative`` by a model that takes ``model_window`` items at once.

    The whole row when it fits; else ``[0, model_window)`` for positions in the first half window,
    ``[len - model_window, len)`` for positions in the last half window, and ``[pos - w // 2,
    pos + w // 2)`` in between (one item shorter than ``w`` when ``w`` is odd, as in ProteinGym).

    Matched exactly: this function's results, and how tttlab calls it. Despite its parameter name,
    ProteinGym's ESM-1v/ESM-2 masked-marginals script passes token coordinates: the row is BOS +
    residues + EOS (``seq_len_wo_special = len(seq) + 2``), the position is the masked token's
    (residue ``j`` is token ``j + 1``) and the window is 1,024 tokens, sliced from the token row
    without adding BOS/EOS back. ``masked_marginals`` and ``wt_marginals`` call it the same way
    (``tests/test_proteingym_windows.py`` checks both against a transcription of that script's
    loop). ProteinGym's own wild-type-marginals pass instead runs an over-long ESM-2 input whole.
    """
    for name, value in (("mutation_position_relative", mutation_position_relative),
                        ("seq_len_wo_special", seq_len_wo_special), ("model_window", model_window)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    half = model_window // 2
    if seq_len_wo_special <= model_window:
        return 0, int(seq_len_wo_special)
    if mutation_position_relative < half:
        return 0, int(model_window)
    if mutation_position_relative >= seq_len_wo_special - half:
        return int(seq_len_wo_special - model_window), int(seq_len_wo_special)
    return (int(max(0, mutation_position_relative - half)),
            int(min(seq_len_wo_special, mutation_position_relative + half)))


#: masked copies per forward pass on CPU, where 4-16 cost the same per copy
#: (measured with benchmarks/bench_engine.py)
CPU_BATCH = 8


def _default_batch(model, tokens_per_row: int) -> int:
    """Masked copies per pass: ``CPU_BATCH`` on CPU; on CUDA as many as half the free memory
    holds, from an upper estimate of one row's live activations (hidden states, feed-forward and,
    should SDPA fall back to its math kernel, the heads x T x T attention scores, all fp32)."""
    device = model_device(model)
    if device.type != "cuda":
        return CPU_BATCH
    free, _ = torch.cuda.mem_get_info(device)
    width = 16 * model.embed_dim + 2 * model.attention_heads * tokens_per_row  # floats per token
    per_row = 4 * tokens_per_row * width
    return int(max(1, min(512, free * 0.5 // per_row)))


def _final_hidden(model, tokens, rows=None, padded=None):
    """ESM-2 forward up to the final layer norm: ``model(tokens)`` without the LM head, so scoring
    can apply the head to the masked rows only.

    Returns B x T x C, or with ``rows`` (B x k token indices) only those rows, B x k x C: the last
    layer then runs its queries and feed-forward on those rows alone (same values, less work).
    ``padded=False`` promises ``tokens`` hold no padding (skips a check that syncs a GPU).
    """
    from tttlab.engine.fastpath import layer_forward, uses_fast_attention

    if hasattr(model, "final_hidden"):  # a model that says how (engine.folding.EsmLanguageModel)
        return model.final_hidden(tokens, rows=rows, padded=padded)
    padding_mask = tokens.eq(model.padding_idx)
    x = model.embed_scale * model.embed_tokens(tokens)
    if model.token_dropout:
        x = x.masked_fill((tokens == model.mask_idx).unsqueeze(-1), 0.0)
        src_lengths = (~padding_mask).sum(-1)
        observed = (tokens == model.mask_idx).sum(-1).to(x.dtype) / src_lengths
        x = x * (1 - 0.15 * 0.8) / (1 - observed)[:, None, None]
    if padded is None:
        padded = bool(padding_mask.any())
    pad = padding_mask if padded else None
    if padded:
        x = x * (1 - padding_mask.unsqueeze(-1).type_as(x))
    if not uses_fast_attention(model):  # the stock modules, in their T x B x C layout
        x = x.transpose(0, 1)
        for layer in model.layers:
            x, _ = layer(x, self_attn_padding_mask=pad, need_head_weights=False)
        x = model.emb_layer_norm_after(x).transpose(0, 1)
        return x if rows is None else x.gather(1, rows[..., None].expand(-1, -1, x.shape[-1]))
    last = len(model.layers) - 1
    for i, layer in enumerate(model.layers):
        x = layer_forward(layer, x, pad, rows=rows if i == last else None)
    return model.emb_layer_norm_after(x)


def selected_hidden(model, tokens, selected, padded=None):
    """``_final_hidden(model, tokens)[selected]`` (n x C, in that order) computed where it is
    needed: the last layer runs its queries, attention output and feed-forward at the selected
    positions only (keys and values still come from every token). Same values up to float
    rounding; with 15 % of positions selected, about 85 % less work in the last layer (training
    losses on masked tokens: pretraining, TTT's ``loss="masked_tokens"``)."""
    counts = selected.sum(1)
    width = max(int(counts.max()), 1)
    # each row's selected positions first, in order (a stable sort), padded with unselected ones
    rows = torch.argsort((~selected).to(torch.int8), dim=1, stable=True)[:, :width]
    kept = torch.arange(width, device=selected.device) < counts[:, None]
    return _final_hidden(model, tokens, rows=rows, padded=padded)[kept]


# ------------------------------------------------------------------------ marginals
def _window_groups(seq: str, model) -> list[tuple[tuple[int, int], list[int]]]:
    """``((first, end) token slice, 0-based residues scored in it)`` for ``seq``: each residue's
    ProteinGym window (``optimal_window`` of its token in the BOS + residues + EOS row, a window of
    the model's context in tokens), grouped by window."""
    context = max_residues(model) + 2
    groups: dict[tuple[int, int], list[int]] = {}
    for j in range(len(seq)):
        groups.setdefault(optimal_window(j + 1, len(seq) + 2, context), []).append(j)
    return sorted(groups.items())


def masked_marginals(model, seq: str, batch_size: int | None = None, progress: bool = False,
                     amp: bool = True, positions=None) -> np.ndarray:
    """L x 20 array of log p(aa | sequence with position i masked), columns in ``STANDARD_AA`` order.

    Every position gets its own masked copy; copies are batched ``batch_size`` at a time (default:
    ``CPU_BATCH`` on CPU, memory-aware on CUDA). Proteins longer than the model context are scored
    as ProteinGym's ESM script scores them: each masked residue in its ``optimal_window`` of
    1,024 tokens of the BOS + residues + EOS row. Log-probabilities are normalised over the model's whole
    vocabulary. ``positions`` (0-based) scores only those rows; the others are NaN (so
    ``pseudo_perplexity(..., marginals=...)`` averages over them alone).
    """
    return _marginals(model, seq, None, batch_size, progress, amp, positions)


def approx_masked_marginals(model, seq: str, spacing: int = 16, batch_size: int | None = None,
                            progress: bool = False, amp: bool = True) -> np.ndarray:
    """Approximate ``masked_marginals``: each copy masks every ``spacing``-th residue at once
    (i, i + spacing, ...), so a window needs ``spacing`` copies instead of one per residue.

    Each residue's neighbours within ``spacing - 1`` stay visible; more distant context is
    partly masked, so values differ from the exact ones (``spacing >= len(seq)`` is exact).
    Not used by default; benchmarks/bench_engine.py reports its rank agreement with the exact
    scores over all single mutants of TEM-1.
    """
    if not isinstance(spacing, int) or spacing < 1:
        raise ValueError(f"spacing must be a positive integer, got {spacing!r}")
    return _marginals(model, seq, spacing, batch_size, progress, amp)


def _marginals(model, seq, spacing, batch_size, progress, amp, only=None):
    from tqdm.auto import tqdm

    seq = check_sequence(seq)
    alphabet = model.alphabet
    device = model_device(model)
    aa_idx = torch.tensor([alphabet.get_idx(a) for a in STANDARD_AA], device=device)
    groups = _window_groups(seq, model)
    if only is not None:
        only = {int(i) for i in only}
        if any(not 0 <= i < len(seq) for i in only):
            raise ValueError(f"positions must be 0-based residue indices below {len(seq)}")
        groups = [(s, [i for i in g if i in only]) for s, g in groups]
        groups = [(s, g) for s, g in groups if g]
    row = encode(alphabet, seq, device)  # BOS + residues + EOS; windows are slices of it
    batch_size = batch_size or _default_batch(model, min(len(row), max_residues(model) + 2))
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    bar = tqdm(total=sum(len(g) for _, g in groups), disable=not progress,
               desc="masked marginals", leave=False)
    with scoring_mode(model, amp):
        out = torch.full((len(seq), len(STANDARD_AA)), float("nan"), device=device)
        for (start, end), positions in groups:
            tokens = row[start:end]
            if spacing is None:  # one masked residue per copy
                copies = [[p] for p in positions]
            else:  # residues `spacing` apart share a copy; pad rows by repeating the first
                copies = [positions[j::spacing] for j in range(min(spacing, len(positions)))]
            width = max(len(c) for c in copies)
            pos = torch.tensor([c + c[:1] * (width - len(c)) for c in copies], device=device)
            for chunk, n in zip(pos.split(batch_size), torch.tensor(
                    [len(c) for c in copies]).split(batch_size)):
                cols = chunk + 1 - start  # token columns of the masked residues
                batch = tokens.repeat(len(chunk), 1).scatter_(1, cols, alphabet.mask_idx)
                hidden = _final_hidden(model, batch, rows=cols, padded=False)
                logp = torch.log_softmax(model.lm_head(hidden).float(), dim=-1)[..., aa_idx]
                out[chunk.flatten()] = logp.flatten(0, 1)  # repeated rows rewrite equal values
                bar.update(int(n.sum()))
    bar.close()
    return out.cpu().numpy()


def wt_marginals(model, seq: str, amp: bool = True, progress: bool = False) -> np.ndarray:
    """L x 20 log-probabilities from one unmasked pass.

    Cost: one pass for a protein within the model context (1,022 residues for ESM-2). Longer
    proteins use the windows of ``masked_marginals`` (``optimal_window``), one pass per distinct
    window, which grows
    with L - 1,022 (a 3,000-residue protein: about 2,000 passes of 1,024 tokens), so ``progress``
    shows a bar over those passes.
    """
    from tqdm.auto import tqdm

    seq = check_sequence(seq)
    alphabet = model.alphabet
    device = model_device(model)
    aa_idx = torch.tensor([alphabet.get_idx(a) for a in STANDARD_AA], device=device)
    groups = _window_groups(seq, model)
    row = encode(alphabet, seq, device)
    with scoring_mode(model, amp):
        out = torch.empty(len(seq), len(STANDARD_AA), device=device)
        for (start, end), positions in tqdm(groups, disable=not progress or len(groups) < 2,
                                            desc="wild-type marginals (windows)", leave=False):
            pos = torch.tensor(positions, device=device)
            hidden = _final_hidden(model, row[None, start:end], padded=False)[0, pos + 1 - start]
            out[pos] = torch.log_softmax(model.lm_head(hidden).float(), -1)[:, aa_idx]
    return out.cpu().numpy()


def wild_type_log_probs(marginals: np.ndarray, seq: str) -> np.ndarray:
    """log p(wild-type residue) per position from an L x 20 marginal matrix (NaN at X)."""
    seq = check_sequence(seq)
    col = np.array([STANDARD_AA.find(c) for c in seq])
    values = marginals[np.arange(len(seq)), np.clip(col, 0, None)].astype(float)
    values[col < 0] = np.nan
    return values


def pseudo_perplexity(model, seq: str, marginals: np.ndarray | None = None, **kwargs) -> float:
    """exp(-mean_i log p(x_i | x without i)) over the standard residues of ``seq``."""
    if marginals is None:
        marginals = masked_marginals(model, seq, **kwargs)
    return float(math.exp(-np.nanmean(wild_type_log_probs(marginals, seq))))


# -------------------------------------------------------------------------- mutants
def parse_mutant(wt_seq: str, mutant: str) -> list[tuple[int, str, str]]:
    """``"A24C:D30N"`` -> [(23, "A", "C"), (29, "D", "N")] (0-based), validated against ``wt_seq``."""
    if not isinstance(mutant, str) or not mutant.strip():
        raise ValueError(f"empty mutant entry: {mutant!r}")
    subs, seen = [], set()
    for part in mutant.strip().split(":"):
        m = _MUTATION.match(part.strip())
        if not m:
            raise ValueError(f"{mutant}: malformed substitution {part!r} (expected e.g. A24C)")
        wt, pos, mt = m.group(1), int(m.group(2)), m.group(3)
        if wt not in STANDARD_AA or mt not in STANDARD_AA:
            raise ValueError(f"{mutant}: non-standard amino acid in {part!r}")
        if not 1 <= pos <= len(wt_seq):
            raise ValueError(f"{mutant}: position {pos} out of range 1-{len(wt_seq)}")
        if wt_seq[pos - 1] != wt:
            raise ValueError(f"{mutant}: wild type at {pos} is {wt_seq[pos - 1]}, not {wt}")
        if pos in seen:
            raise ValueError(f"{mutant}: position {pos} mutated twice")
        seen.add(pos)
        subs.append((pos - 1, wt, mt))
    return subs


def apply_mutant(wt_seq: str, mutant: str) -> str:
    """The mutated sequence of ``mutant``."""
    seq = list(wt_seq)
    for pos, _, mt in parse_mutant(wt_seq, mutant):
        seq[pos] = mt
    return "".join(seq)


def pseudo_log_likelihood(model, seq: str, **kwargs) -> float:
    """Sum over positions of log p(x_i | x without i) (L masked passes)."""
    return float(np.nansum(wild_type_log_probs(masked_marginals(model, seq, **kwargs), seq)))


METHODS = ("masked_marginals", "wt_marginals", "pseudo_likelihood")


def score_mutants(model, wt_seq: str, mutants, method: str = "masked_marginals",
                  marginals: np.ndarray | None = None, progress: bool = False) -> np.ndarray:
    """Zero-shot scores of ProteinGym mutant strings (higher = predicted fitter).

    ``masked_marginals`` / ``wt_marginals``: sum over substitutions of log p(mt) - log p(wt) (additive
    for multi-mutants). ``pseudo_likelihood``: PLL(mutant) - PLL(wild type), L passes per variant.
    Pass precomputed ``marginals`` (L x 20) to skip the model. Invalid, empty or duplicated
    entries raise ``ValueError`` naming the entry.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    wt_seq = check_sequence(wt_seq, "wild type")
    mutants = list(mutants)
    parsed, seen = [], set()
    for m in mutants:
        key = m.strip() if isinstance(m, str) else m
        if key in seen:
            raise ValueError(f"duplicate mutant entry: {m}")
        seen.add(key)
        parsed.append(parse_mutant(wt_seq, m))
    if method == "pseudo_likelihood":
        from tqdm.auto import tqdm

        base = pseudo_log_likelihood(model, wt_seq)
        return np.array([pseudo_log_likelihood(model, apply_mutant(wt_seq, m)) - base
                         for m in tqdm(mutants, disable=not progress, desc="PLL")])
    if marginals is None:
        marginals = (masked_marginals(model, wt_seq, progress=progress)
                     if method == "masked_marginals" else wt_marginals(model, wt_seq, progress=progress))
    col = {a: j for j, a in enumerate(STANDARD_AA)}
    return np.array([sum(marginals[p, col[mt]] - marginals[p, col[wt]] for p, wt, mt in subs)
                     for subs in parsed], dtype=float)


# --------------------------------------------------------------------- representations
def representations(model, seqs, layer: int = -1, pool: str = "mean", batch_size: int = 8,
                    amp: bool = True):
    """Per-protein (``pool="mean"``, N x C array) or per-residue (``pool=None``, list of L x C)
    representations from ``layer`` (-1 = last, after the final layer norm). Proteins longer
    than the context are cropped to their first 1022 residues."""
    if isinstance(seqs, str):
        seqs = [seqs]
    seqs = [check_sequence(s)[: max_residues(model)] for s in seqs]
    layer = model.num_layers if layer == -1 else layer
    if not 0 <= layer <= model.num_layers:
        raise ValueError(f"layer must be in 0..{model.num_layers} or -1, got {layer}")
    alphabet, device = model.alphabet, model_device(model)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    results: dict[int, np.ndarray] = {}
    with scoring_mode(model, amp):
        for chunk in range(0, len(order), batch_size):
            idx = order[chunk:chunk + batch_size]
            width = max(len(seqs[i]) for i in idx) + 2
            tokens = torch.full((len(idx), width), alphabet.padding_idx, device=device)
            for row, i in enumerate(idx):
                tokens[row, : len(seqs[i]) + 2] = encode(alphabet, seqs[i], device)
            rep = model(tokens, repr_layers=[layer])["representations"][layer].float()
            for row, i in enumerate(idx):
                results[i] = rep[row, 1: len(seqs[i]) + 1].cpu().numpy()
    out = [results[i] for i in range(len(seqs))]
    if pool == "mean":
        return np.stack([r.mean(axis=0) for r in out])
    if pool is None:
        return out
    raise ValueError(f"pool must be 'mean' or None, got {pool!r}")


# ------------------------------------------------------------- mutational scan (your protein)
def substitution_scores(marginals: np.ndarray, seq: str) -> np.ndarray:
    """L x 20 masked-marginal scores log p(mt) - log p(wt) of every single substitution (columns
    ``STANDARD_AA``; 0 at the wild type, NaN rows at X), from an L x 20 ``marginals`` matrix."""
    seq = check_sequence(seq)
    marginals = np.asarray(marginals, dtype=float)
    if marginals.shape != (len(seq), len(STANDARD_AA)):
        raise ValueError(f"marginals shape {marginals.shape} does not match "
                         f"{len(seq)} residues x 20")
    return marginals - wild_type_log_probs(marginals, seq)[:, None]


def mutational_scan_table(marginals: np.ndarray, seq: str, before: np.ndarray | None = None):
    """Every single substitution (19 per standard residue, X skipped) as a DataFrame with columns
    ``mutant`` (ProteinGym style, 1-based), ``position``, ``wt``, ``mt``, ``score``
    (log p(mt) - log p(wt); negative = predicted deleterious), in sequence order. With ``before``
    (marginals of the model before TTT) also ``score_before`` and ``change``
    (``score - score_before``)."""
    import pandas as pd

    seq = check_sequence(seq)
    scores = substitution_scores(marginals, seq)
    rows = [(f"{wt}{i + 1}{mt}", i + 1, wt, mt, scores[i, j])
            for i, wt in enumerate(seq) if wt != "X"
            for j, mt in enumerate(STANDARD_AA) if mt != wt]
    table = pd.DataFrame(rows, columns=["mutant", "position", "wt", "mt", "score"])
    if before is not None:
        old = substitution_scores(before, seq)
        cols = [STANDARD_AA.index(mt) for mt in table["mt"]]
        table["score_before"] = old[table["position"].to_numpy() - 1, cols]
        table["change"] = table["score"] - table["score_before"]
    return table
