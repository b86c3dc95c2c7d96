"""Long proteins are scored as ProteinGym scores them: ``optimal_window`` against a transcription of
ProteinGym's rule, and masked/wild-type marginals against a loop that follows its ESM script."""

import numpy as np
import pytest
import torch

import tttlab
from tttlab.common.sequences import STANDARD_AA
from tttlab.engine import scoring
from tttlab.engine.scoring import encode, masked_marginals, optimal_window, wt_marginals

UBQ = "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG"


def proteingym_rule(pos, length, window):
    """ProteinGym's ``get_optimal_window``, written out case by case."""
    half = window // 2
    if length <= window:
        return [0, length]
    if pos < half:
        return [0, window]
    if pos >= length - half:
        return [length - window, length]
    return [max(0, pos - half), min(length, pos + half)]


def test_optimal_window_is_proteingyms_rule_everywhere():
    rng = np.random.default_rng(0)
    cases = [(p, n, w) for w in (1, 2, 3, 7, 8, 31, 32, 1024) for n in range(1, 80, 3)
             for p in range(n)]
    cases += [(int(rng.integers(n)), int(n), 1024) for n in rng.integers(1025, 6000, 2000)]
    cases += [(p, 1026, 1024) for p in range(1026)] + [(p, 1025, 1023) for p in range(1025)]
    for pos, length, window in cases:
        assert list(optimal_window(pos, length, window)) == proteingym_rule(pos, length, window)
    assert tttlab.optimal_window is optimal_window
    assert optimal_window(np.int64(600), 3000, 1024) == (88, 1112)
    with pytest.raises(TypeError, match="model_window"):
        optimal_window(3, 2000, 1024.0)


def proteingym_loop(model, seq, context):
    """ProteinGym's ESM masked-marginals loop (``compute_fitness.py``): mask token ``i`` of the
    BOS + residues + EOS row, slice ``optimal_window(i, len(seq) + 2, context)`` from it, read the
    log-softmax at ``i - start``; rows 1..L are the residues."""
    alphabet = model.alphabet
    row = encode(alphabet, seq)
    aa = [alphabet.get_idx(a) for a in STANDARD_AA]
    out = []
    with torch.no_grad():
        for i in range(1, len(seq) + 1):
            masked = row.clone()
            masked[i] = alphabet.mask_idx
            start, end = proteingym_rule(i, len(seq) + 2, context)
            logits = model(masked[None, start:end])["logits"][0, i - start]
            out.append(torch.log_softmax(logits, -1)[aa].numpy())
    return np.array(out)


@pytest.mark.parametrize("residues", [30, 29])  # even and odd token windows (32 and 31)
def test_long_protein_marginals_follow_proteingyms_script(tiny, monkeypatch, residues):
    model, _ = tiny
    monkeypatch.setattr(scoring, "max_residues", lambda m: residues)
    seq = UBQ[:70]
    expected = proteingym_loop(model, seq, residues + 2)
    np.testing.assert_allclose(masked_marginals(model, seq, batch_size=5), expected,
                               rtol=0, atol=2e-5)
    # windows are raw token slices: residue 0's window is BOS + the first residues, no EOS
    assert dict(scoring._window_groups(seq, model))[(0, residues + 2)][0] == 0
    # wild-type marginals: the same windows, unmasked
    alphabet = model.alphabet
    row = encode(alphabet, seq)
    aa = [alphabet.get_idx(a) for a in STANDARD_AA]
    with torch.no_grad():
        want = []
        for j in range(len(seq)):
            start, end = proteingym_rule(j + 1, len(seq) + 2, residues + 2)
            logits = model(row[None, start:end])["logits"][0, j + 1 - start]
            want.append(torch.log_softmax(logits, -1)[aa].numpy())
    np.testing.assert_allclose(wt_marginals(model, seq), np.array(want), rtol=0, atol=2e-5)


def test_proteins_within_the_context_are_scored_whole(tiny):
    model, _ = tiny
    assert scoring._window_groups(UBQ, model) == [((0, len(UBQ) + 2), list(range(len(UBQ))))]


def test_long_protein_pseudo_perplexity_reads_each_residues_own_token(tiny, monkeypatch):
    """ProteinTTT's pseudo-perplexity for proteins longer than its crop reads the wild-type
    log-probability at ``x[i - start]`` instead of ``x[i]`` (a neighbour's token once the window has
    moved); tttlab scores residue j against residue j."""
    model, _ = tiny
    monkeypatch.setattr(scoring, "max_residues", lambda m: 30)
    seq = UBQ[:70]
    logp = proteingym_loop(model, seq, 32)
    own = logp[np.arange(len(seq)), [STANDARD_AA.index(a) for a in seq]]
    assert tttlab.pseudo_perplexity(model, seq) == pytest.approx(float(np.exp(-own.mean())),
                                                                 rel=1e-5)
