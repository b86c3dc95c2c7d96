"""BERT-style masking shared by pretraining and test-time training (Devlin et al. 2019; ESM-2 uses the
same 15 % / 80-10-10 rule): choose positions, then mask, replace by a random standard amino acid, or keep.

Vectorised on the tokens' device; randomness comes from an explicit ``torch.Generator``.
"""

from __future__ import annotations

import torch

from tttlab.common.sequences import STANDARD_AA


_AA_CACHE: dict = {}


def _cached_aa_indices(alphabet, device) -> torch.Tensor:
    """Alphabet indices of the 20 standard amino acids (``STANDARD_AA`` order), kept on
    ``device`` (no host-to-device copy per micro-batch)."""
    key = (tuple(alphabet.get_idx(a) for a in STANDARD_AA), str(device))
    if key not in _AA_CACHE:
        with torch.inference_mode(False):
            _AA_CACHE[key] = torch.tensor(key[0], dtype=torch.long, device=device)
    return _AA_CACHE[key]


def maskable_positions(tokens: torch.Tensor, alphabet) -> torch.Tensor:
    """Boolean mask of positions holding residues (not BOS/EOS/padding/mask)."""
    can = tokens != alphabet.cls_idx
    for special in (alphabet.eos_idx, alphabet.padding_idx, alphabet.mask_idx):
        can &= tokens != special
    return can


def bert_mask(tokens: torch.Tensor, alphabet, generator: torch.Generator, mask_ratio=0.15,
              replace_ratio=0.1, keep_ratio=0.1):
    """Corrupt ``tokens`` (B x T) the BERT way.

    Each residue is selected with probability ``mask_ratio`` (at least one per row); selected
    positions become ``<mask>`` (1 - replace - keep), a random standard amino acid (``replace_ratio``)
    or stay unchanged (``keep_ratio``).

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
    aa = _cached_aa_indices(alphabet, device)
    random_aa = aa[torch.randint(len(aa), tokens.shape, generator=generator,
                                 device=generator.device).to(device)]
    to_mask = selected & (action >= replace_ratio + keep_ratio)
    to_replace = selected & (action < replace_ratio)
    corrupted = torch.where(to_replace, random_aa, tokens.masked_fill(to_mask, alphabet.mask_idx))
    return corrupted, selected
