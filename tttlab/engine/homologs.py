"""Homolog-aware TTT batches (the paper's "ProteinTTT_MSA"): each masked copy of a micro-batch is
the target or one of its homologs, so the model adapts to the protein's family.

The rule, one draw per copy: with probability ``cfg.homolog_target_share`` the target, otherwise a
homolog drawn with probability proportional to its weight (``HomologSet.weights``: the usual
80 %-identity reweighting of redundant homologs, computed where the set is built). Each drawn
row is cropped like the target (``cfg.crop``) and the micro-batch is padded to its longest row;
padding is neither masked nor scored.
"""

from __future__ import annotations

import torch

from tttlab.common.homolog_set import HomologSet
from tttlab.engine.masking import crop_copies
from tttlab.engine.scoring import encode


class HomologSampler:
    """Draws the rows of one micro-batch from the target and a ``HomologSet`` (token rows encoded
    once, on the target's device)."""

    def __init__(self, alphabet, target_tokens: torch.Tensor, homologs: HomologSet, cfg):
        self.alphabet, self.cfg = alphabet, cfg
        device = target_tokens.device
        self.rows = [target_tokens] + [encode(alphabet, s, device) for s in homologs.sequences]
        self.weights = torch.tensor(homologs.weights, dtype=torch.float64)
        self.weights /= self.weights.sum()

    def batch(self, n: int, generator) -> torch.Tensor:
        """``n`` rows (B x T, padded with the alphabet's padding token): each the target with
        probability ``homolog_target_share``, else a weighted homolog, cropped at random to
        ``crop_size`` tokens."""
        device = self.rows[0].device
        cpu = torch.Generator().manual_seed(int(torch.randint(
            2 ** 62, (1,), generator=generator, device=generator.device)))
        is_target = torch.rand(n, generator=cpu) < self.cfg.homolog_target_share
        picks = torch.multinomial(self.weights, n, replacement=True, generator=cpu) + 1
        chosen = torch.where(is_target, torch.zeros_like(picks), picks).tolist()
        rows = [crop_copies(self.rows[i], 1, self.cfg.crop_size, generator, device,
                            self.cfg.crop)[0] for i in chosen]
        width = max(len(r) for r in rows)
        out = torch.full((n, width), self.alphabet.padding_idx, dtype=torch.long, device=device)
        for k, r in enumerate(rows):
            out[k, :len(r)] = r
        return out
