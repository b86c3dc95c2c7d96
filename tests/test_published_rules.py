"""The published ProteinTTT rules (``proteinttt/base.py`` at fb33da6, ``_ttt_sample_batch``),
re-implemented here with plain Python loops, against the engine's vectorised masking and cropping."""

import pytest
import torch

from tttlab.engine.config import TTTConfig
from tttlab.engine.masking import exact_count_mask, replacement_tokens
from tttlab.engine.scoring import encode
from tttlab.engine.masking import crop_copies
from tttlab.engine.ttt import corrupt

TEM1_LIKE = "MSIQHFRVALIPFFAAFCLPVFAHPETLVKVKDAEDQLGARVGYIELDLNSGKILESFRPEERFPMMSTFKVLLCGAVLSRIDAGQEQ"


def published_mask(tokens, alphabet, keys, actions, draws, ratio=0.15, replace=0.1, keep=0.1):
    """ProteinTTT's masking, one row and one position at a time, on given uniform draws.

    The published code draws a ``randperm`` of the non-special positions and masks its first
    ``int(n * ratio)``; taking the positions with the smallest of one uniform key each is the same
    uniform subset. Each chosen position then draws ``p``: ``p < 1 - keep - replace`` masks,
    ``p < 1 - keep`` replaces by a uniform pick of the alphabet's non-special tokens, else keeps.
    Unlike the published code (which masks nothing when ``int(n * ratio) == 0``), one position is
    always chosen, as the engine does."""
    non_special = {alphabet.get_idx(t) for t in alphabet.standard_toks}
    cands = [alphabet.get_idx(t) for t in alphabet.standard_toks]
    out = tokens.clone()
    chosen = torch.zeros_like(tokens, dtype=torch.bool)
    for i in range(tokens.shape[0]):
        positions = [j for j in range(tokens.shape[1]) if tokens[i, j].item() in non_special]
        count = min(len(positions), max(1, int(len(positions) * ratio)))
        for j in sorted(positions, key=lambda j: keys[i, j].item())[:count]:
            chosen[i, j] = True
            p = actions[i, j].item()
            if p < 1 - keep - replace:
                out[i, j] = alphabet.mask_idx
            elif p < 1 - keep:
                out[i, j] = cands[int(draws[i, j].item())]
    return out, chosen


@pytest.mark.parametrize("crop", [1024, 40])
def test_exact_count_mask_is_the_published_rule(tiny, crop):
    _, alphabet = tiny
    tokens = encode(alphabet, TEM1_LIKE)
    gen = torch.Generator().manual_seed(3)
    batch = crop_copies(tokens, 16, crop, gen, "cpu")
    state = gen.get_state()
    corrupted, selected = exact_count_mask(batch, alphabet, gen)
    gen.set_state(state)  # the same draws, in the documented order
    keys = torch.rand(batch.shape, generator=gen)
    actions = torch.rand(batch.shape, generator=gen)
    draws = torch.randint(len(alphabet.standard_toks), batch.shape, generator=gen)
    want, chosen = published_mask(batch, alphabet, keys, actions, draws)
    assert torch.equal(selected, chosen) and torch.equal(corrupted, want)
    residues = (batch != alphabet.cls_idx) & (batch != alphabet.eos_idx)
    assert selected.sum(1).tolist() == [int(n * 0.15) for n in residues.sum(1).tolist()]


def test_replacements_come_from_the_alphabets_non_special_tokens(tiny):
    _, alphabet = tiny
    vocab = replacement_tokens(alphabet, "alphabet", "cpu").tolist()
    assert [alphabet.get_tok(i) for i in vocab] == list(alphabet.standard_toks)
    assert len(vocab) == 27 and len(replacement_tokens(alphabet, "amino_acids", "cpu")) == 20
    tokens = encode(alphabet, TEM1_LIKE * 20).expand(64, -1)  # many replacements
    corrupted, selected = exact_count_mask(tokens, alphabet, torch.Generator().manual_seed(0),
                                           replace_ratio=1.0, keep_ratio=0.0)
    drawn = set(corrupted[selected].tolist())
    assert drawn <= set(vocab) and drawn - set(replacement_tokens(alphabet, "amino_acids", "cpu").tolist())
    with pytest.raises(ValueError, match="replace_vocab"):
        replacement_tokens(alphabet, "dna", "cpu")


def test_crops_are_raw_token_windows_as_published(tiny):
    """ProteinTTT crops the tokenised row (BOS + residues + EOS) to ``crop_size`` tokens at a uniform
    start in [0, len - crop]; a window may lose BOS or EOS. ``crop="residues"`` keeps both."""
    _, alphabet = tiny
    tokens = encode(alphabet, TEM1_LIKE)
    n, crop = 4000, 30
    rows = crop_copies(tokens, n, crop, torch.Generator().manual_seed(0), "cpu", "tokens")
    assert rows.shape == (n, crop)
    starts = []
    for row in rows:  # every row is a window of the token row; find where it starts
        hits = [s for s in range(len(tokens) - crop + 1) if torch.equal(tokens[s:s + crop], row)]
        assert len(hits) == 1
        starts.append(hits[0])
    assert set(starts) == set(range(len(tokens) - crop + 1))  # every start is drawn
    assert (rows[:, 0] == alphabet.cls_idx).any() and (rows[:, -1] == alphabet.eos_idx).any()
    assert (rows[:, 0] != alphabet.cls_idx).any()
    kept = crop_copies(tokens, 50, crop, torch.Generator().manual_seed(0), "cpu", "residues")
    assert (kept[:, 0] == alphabet.cls_idx).all() and (kept[:, -1] == alphabet.eos_idx).all()
    short = crop_copies(tokens, 3, 1024, torch.Generator().manual_seed(0), "cpu", "tokens")
    assert all(torch.equal(r, tokens) for r in short)  # shorter than the crop: the whole row


def test_defaults_are_the_published_masking_and_cropping(tiny):
    _, alphabet = tiny
    cfg = TTTConfig()
    assert (cfg.mask_count, cfg.replace_vocab, cfg.crop) == ("exact", "alphabet", "tokens")
    tokens = encode(alphabet, TEM1_LIKE).expand(8, -1)
    a = corrupt(tokens, alphabet, cfg, torch.Generator().manual_seed(1))
    b = exact_count_mask(tokens, alphabet, torch.Generator().manual_seed(1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    for bad in (dict(mask_count="poisson"), dict(replace_vocab="dna"), dict(crop="middle"),
                dict(lora_init="xavier"), dict(crop_size=2)):
        with pytest.raises(ValueError):
            TTTConfig(**bad)
