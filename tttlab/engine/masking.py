"""Masking shared by pretraining and test-time training: choose residue positions, then mask them,
replace them by a random token, or keep them (BERT's 80/10/10, Devlin et al. 2019).

Two selection rules: ``bert_mask`` selects each residue with probability ``mask_ratio`` (ESM-2
pretraining), ``exact_count_mask`` selects exactly ``int(mask_ratio * n)`` residues (the published
ProteinTTT code). Vectorised on the tokens' device; randomness comes from an explicit
``torch.Generator``.
"""

from __future__ import annotations

import torch

from tttlab.common.sequences import STANDARD_AA
from tttlab.engine.config import REPLACE_VOCABS

_TOKEN_CACHE: dict = {}


def replacement_tokens(alphabet, vocab: str, device) -> torch.Tensor:
    """Token indices random replacements are drawn from, kept on ``device`` (no host-to-device
    copy per micro-batch): ``"alphabet"`` (the alphabet's non-special tokens,
    ``alphabet.standard_toks``, as ProteinTTT draws them: for ESM-2 the 20 amino acids plus X, B,
    U, Z, O, ``.`` and ``-``) or ``"amino_acids"`` (the 20 standard amino acids, ``STANDARD_AA``
    order)."""
    if vocab not in REPLACE_VOCABS:
        raise ValueError(f"replace_vocab must be one of {REPLACE_VOCABS}, got {vocab!r}")
    toks = alphabet.standard_toks if vocab == "alphabet" else STANDARD_AA
    key = (tuple(alphabet.get_idx(t) for t in toks), str(device))
    if key not in _TOKEN_CACHE:
        with torch.inference_mode(False):
            _TOKEN_CACHE[key] = torch.tensor(key[0], dtype=torch.long, device=device)
    return _TOKEN_CACHE[key]


def maskable_positions(tokens: torch.Tensor, alphabet) -> torch.Tensor:
    """Boolean mask of positions holding residues (not BOS/EOS/padding/mask)."""
    can = tokens != alphabet.cls_idx
    for special in (alphabet.eos_idx, alphabet.padding_idx, alphabet.mask_idx):
        can &= tokens != special
    return can


def bert_mask(tokens: torch.Tensor, alphabet, generator: torch.Generator, mask_ratio=0.15,
              replace_ratio=0.1, keep_ratio=0.1, replace_vocab: str = "amino_acids"):
    """Corrupt ``tokens`` (B x T) the BERT way.

    Each residue is selected with probability ``mask_ratio`` (at least one per row); selected
    positions become ``<mask>`` (1 - replace - keep), a random token (``replace_ratio``)
    or stay unchanged (``keep_ratio``). Replacements come from
    ``replacement_tokens(replace_vocab)`` (default: the 20 standard amino acids).

    Returns
    -------
    corrupted tokens (B x T) and the boolean selection (B x T) on which the loss is taken.
    """
    device = tokens.device
    can = maskable_positions(tokens, alphabet)
    u = torch.rand(tokens.shape, generator=generator, device=generator.device).to(device)
    selected = (u < mask_ratio) & can
    # guarantee one selected residue per row: the row's residue with the smallest draw
    # (branch-free, so a GPU never waits for the host)
    none = ~selected.any(dim=1) & can.any(dim=1)
    first = torch.where(can, u, torch.full_like(u, 2.0)).argmin(dim=1, keepdim=True)
    selected |= torch.zeros_like(selected).scatter_(1, first, none[:, None])
    action = torch.rand(tokens.shape, generator=generator, device=generator.device).to(device)
    aa = replacement_tokens(alphabet, replace_vocab, device)
    random_aa = aa[torch.randint(len(aa), tokens.shape, generator=generator,
                                 device=generator.device).to(device)]
    to_mask = selected & (action >= replace_ratio + keep_ratio)
    to_replace = selected & (action < replace_ratio)
    corrupted = torch.where(to_replace, random_aa, tokens.masked_fill(to_mask, alphabet.mask_idx))
    return corrupted, selected


def exact_count_mask(tokens: torch.Tensor, alphabet, generator: torch.Generator, mask_ratio=0.15,
                     replace_ratio=0.1, keep_ratio=0.1, replace_vocab: str = "alphabet"):
    """Corrupt ``tokens`` (B x T) by ProteinTTT's rule (``proteinttt/base.py``,
    ``_ttt_sample_batch``), vectorised.

    Each row with ``n`` residues gets exactly ``int(n * mask_ratio)`` selected positions (at least
    one), drawn uniformly without replacement: the residues with the smallest of one uniform draw
    per position. Each selected position draws ``a ~ U(0, 1)``: ``a < 1 - replace - keep`` ->
    ``<mask>``; ``a < 1 - keep`` -> a uniform token of ``replacement_tokens(replace_vocab)``;
    else kept. Draw order: position keys (B x T), actions (B x T), replacement indices (B x T),
    all from ``generator`` (``tests/test_published_rules.py`` re-implements this with loops).

    Returns corrupted tokens and the boolean selection (B x T) on which a masked loss is taken.
    """
    device = tokens.device
    can = maskable_positions(tokens, alphabet)
    shape = tokens.shape
    keys = torch.rand(shape, generator=generator, device=generator.device).to(device)
    n = can.sum(1)
    # int(n * ratio) in float64, the arithmetic of Python's int(len(...) * ratio)
    count = torch.floor(n.double() * mask_ratio).long().clamp(min=1).minimum(n)
    order = torch.where(can, keys, torch.full_like(keys, 2.0)).argsort(dim=1)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(
        shape[1], device=device).expand(shape[0], -1).contiguous())
    selected = (rank < count[:, None]) & can
    action = torch.rand(shape, generator=generator, device=generator.device).to(device)
    vocab = replacement_tokens(alphabet, replace_vocab, device)
    random_tok = vocab[torch.randint(len(vocab), shape, generator=generator,
                                     device=generator.device).to(device)]
    to_mask = selected & (action < 1 - replace_ratio - keep_ratio)
    to_replace = selected & ~to_mask & (action < 1 - keep_ratio)
    corrupted = torch.where(to_replace, random_tok, tokens.masked_fill(to_mask, alphabet.mask_idx))
    return corrupted, selected


def crop_copies(tokens: torch.Tensor, n: int, crop: int, generator, device,
            mode: str = "tokens") -> torch.Tensor:
    """``n`` copies of the 1-D token row (BOS + residues + EOS), each cropped at random when the
    row is longer than ``crop`` tokens: ``mode="tokens"`` takes a raw ``crop``-token window of
    the row (ProteinTTT; a window may lack BOS and/or EOS), ``"residues"`` keeps BOS and EOS
    around a random window of ``crop - 2`` residues."""
    if tokens.numel() <= crop:
        return tokens.expand(n, -1).clone()
    body, width = (tokens, crop) if mode == "tokens" else (tokens[1:-1], crop - 2)
    starts = torch.randint(body.numel() - width + 1, (n,), generator=generator,
                           device=generator.device).to(device)
    rows = body[starts[:, None] + torch.arange(width, device=device)[None]]
    if mode == "tokens":
        return rows
    return torch.cat([tokens[:1].expand(n, 1), rows, tokens[-1:].expand(n, 1)], dim=1)
