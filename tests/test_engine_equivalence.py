"""The fast engine computes what stock fair-esm computes: logits, attention maps, contacts, masked
marginals and TTT histories, in fp32 on CPU (tolerances are float32 rounding, stated per test)."""

import esm
import numpy as np
import pytest
import torch

import tttlab
from tttlab.engine import masking
from tttlab.engine import scoring
from tttlab.engine import ttt
from tttlab.common.sequences import STANDARD_AA
from tttlab.engine.models import build_esm2
from tttlab.engine.fastpath import set_fast_attention, uses_fast_attention
from tttlab.engine.scoring import (_final_hidden, approx_masked_marginals, encode, masked_marginals,
                            wt_marginals)
from tttlab.engine.ttt import customized, snapshot

from helpers import stock_loop_marginals

UBQ = "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG"


def stock_copy(model):
    """A pristine fair-esm ESM2 (never patched) with ``model``'s weights."""
    stock = esm.model.esm2.ESM2(num_layers=model.num_layers, embed_dim=model.embed_dim,
                                attention_heads=model.attention_heads, alphabet=model.alphabet,
                                token_dropout=model.token_dropout)
    stock.load_state_dict(model.state_dict())
    return stock.eval()


def batch(alphabet, seqs, mask_every=0):
    """Padded token batch of ``seqs``; with ``mask_every`` every n-th residue is masked."""
    width = max(len(s) for s in seqs) + 2
    tokens = torch.full((len(seqs), width), alphabet.padding_idx)
    for row, s in enumerate(seqs):
        tokens[row, : len(s) + 2] = encode(alphabet, s)
        if mask_every:
            tokens[row, 1: len(s) + 1: mask_every] = alphabet.mask_idx
    return tokens


@pytest.fixture(params=["tiny", "mini"])
def model(request):
    model, _ = request.getfixturevalue(request.param)
    assert uses_fast_attention(model)
    return model


@pytest.mark.parametrize("padded", [False, True])
def test_fast_logits_match_stock_fair_esm(model, padded):
    seqs = [UBQ, UBQ[5:50], UBQ[:30]] if padded else [UBQ] * 3
    tokens = batch(model.alphabet, seqs, mask_every=7)
    assert bool(tokens.eq(model.alphabet.padding_idx).any()) == padded
    with torch.no_grad():
        fast = model(tokens, repr_layers=[1])
        stock = stock_copy(model)(tokens, repr_layers=[1])
    real = tokens.ne(model.alphabet.padding_idx)
    torch.testing.assert_close(fast["logits"][real], stock["logits"][real], rtol=0, atol=1e-4)
    torch.testing.assert_close(fast["representations"][1][real], stock["representations"][1][real],
                               rtol=1e-5, atol=1e-5)  # hidden states reach ~50 in tttlab-mini


def test_attention_maps_and_contacts_are_the_stock_ones(model):
    tokens = batch(model.alphabet, [UBQ, UBQ[:40]])
    with torch.no_grad():
        fast = model(tokens, return_contacts=True)
        stock = stock_copy(model)(tokens, return_contacts=True)
    assert torch.equal(fast["attentions"], stock["attentions"])
    assert torch.equal(fast["contacts"], stock["contacts"])


def test_final_hidden_and_lm_head_equal_model_logits(tiny):
    model, alphabet = tiny
    for seqs in ([UBQ] * 2, [UBQ, UBQ[:33]]):
        tokens = batch(alphabet, seqs, mask_every=5)
        with scoring.scoring_mode(model):
            logits = model(tokens)["logits"]
            hidden = _final_hidden(model, tokens)
            torch.testing.assert_close(model.lm_head(hidden), logits, rtol=0, atol=1e-6)
            # the last layer evaluated at a few rows only gives the same rows
            rows = torch.tensor([[1, 6, 11], [3, 8, 30]])
            part = _final_hidden(model, tokens, rows=rows)
            torch.testing.assert_close(part, hidden[torch.arange(2)[:, None], rows],
                                       rtol=0, atol=1e-5)


def test_masked_marginals_equal_stock_one_position_loop(tiny):
    """Engine (fast attention, batches of copies, last layer and LM head at the masked rows
    only) against the textbook loop over pristine fair-esm. The random tiny model has logits up
    to ~25, so float32 rounding alone is ~1e-5 there: rtol 1e-5 on top of atol 1e-5."""
    model, alphabet = tiny
    seq = UBQ[:50]
    loop = stock_loop_marginals(stock_copy(model), alphabet, seq)
    for batch_size in (None, 1, 7):
        np.testing.assert_allclose(masked_marginals(model, seq, batch_size=batch_size), loop,
                                   rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        wt = torch.log_softmax(stock_copy(model)(encode(alphabet, seq)[None])["logits"], -1)
    aa = [alphabet.get_idx(a) for a in STANDARD_AA]
    np.testing.assert_allclose(wt_marginals(model, seq), wt[0, 1:-1][:, aa].numpy(),
                               rtol=1e-5, atol=1e-5)


def test_marginals_at_chosen_positions_are_the_full_rows(tiny):
    model, _ = tiny
    seq = UBQ[:50]
    full = masked_marginals(model, seq)
    part = masked_marginals(model, seq, positions=[0, 7, 49], batch_size=2)
    np.testing.assert_allclose(part[[0, 7, 49]], full[[0, 7, 49]], rtol=1e-5, atol=1e-5)
    assert np.isnan(np.delete(part, [0, 7, 49], axis=0)).all()
    assert scoring.pseudo_perplexity(model, seq, marginals=part) == pytest.approx(
        float(np.exp(-np.mean([full[i, STANDARD_AA.index(seq[i])] for i in (0, 7, 49)]))), rel=1e-5)
    with pytest.raises(ValueError, match="positions"):
        masked_marginals(model, seq, positions=[50])


def test_engine_restores_model_state(tiny):
    model, _ = tiny
    before = snapshot(model)
    model.train()
    masked_marginals(model, UBQ[:20])
    assert model.training and uses_fast_attention(model)
    model.eval()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_approximate_marginals(tiny):
    model, _ = tiny
    seq = UBQ[:60]
    exact = masked_marginals(model, seq)
    # one residue per copy when the spacing exceeds the protein: the exact values
    np.testing.assert_allclose(approx_masked_marginals(model, seq, spacing=len(seq)), exact,
                               rtol=0, atol=1e-6)
    approx = approx_masked_marginals(model, seq, spacing=8)
    assert approx.shape == exact.shape and np.isfinite(approx).all()
    assert not np.allclose(approx, exact, atol=1e-3)  # other residues masked too
    np.testing.assert_allclose(approx_masked_marginals(model, seq, spacing=8, batch_size=3),
                               approx, rtol=0, atol=1e-5)
    # sliding windows work as for the exact scorer
    scoring_max = scoring.max_residues
    try:
        scoring.max_residues = lambda m: 30
        windowed = approx_masked_marginals(model, seq, spacing=30)
        np.testing.assert_allclose(windowed, masked_marginals(model, seq), rtol=0, atol=1e-5)
    finally:
        scoring.max_residues = scoring_max
    with pytest.raises(ValueError, match="spacing"):
        approx_masked_marginals(model, seq, spacing=0)


def test_ttt_history_fast_equals_stock_attention():
    """Two TTT steps from the same weights with the fused path and with the stock modules:
    same losses and pseudo-perplexities to float32 rounding, same weights after."""
    results = {}
    for fast in (True, False):
        model, _ = build_esm2(num_layers=2, embed_dim=64, attention_heads=4, seed=0,
                              fast_attention=fast)
        with customized(model, UBQ, progress=False, steps=2, batch_size=2, grad_accum_steps=2,
                        eval_every=1, lr=0.01) as r:
            results[fast] = (r.table(), snapshot(model))
    (fast_h, fast_w), (stock_h, stock_w) = results[True], results[False]
    np.testing.assert_allclose(fast_h["loss"][1:].astype(float), stock_h["loss"][1:].astype(float),
                               rtol=1e-5)
    np.testing.assert_allclose(fast_h["pseudo_perplexity"], stock_h["pseudo_perplexity"],
                               rtol=1e-5)
    assert fast_h["loss"][2] < fast_h["loss"][1]
    for k, v in fast_w.items():
        torch.testing.assert_close(v, stock_w[k], rtol=0, atol=1e-5)


def test_bert_mask_selects_one_residue_in_every_row(tiny):
    _, alphabet = tiny
    tokens = batch(alphabet, [UBQ[:12], UBQ[:5], UBQ[:9]])
    corrupted, selected = masking.bert_mask(tokens, alphabet, torch.Generator().manual_seed(1),
                                            mask_ratio=1e-6)
    assert selected.sum(1).tolist() == [1, 1, 1]
    assert not (selected & ~masking.maskable_positions(tokens, alphabet)).any()
    assert torch.equal(corrupted[~selected], tokens[~selected])


def test_memory_aware_batches_follow_free_memory(tiny, monkeypatch):
    """The CUDA branches, with the free memory faked (no GPU needed)."""
    model, _ = tiny
    cuda = torch.device("cuda")
    cfg = tttlab.preset(batch_size=4, grad_accum_steps=16)
    assert ttt._rows_per_pass(model, cfg, 300, torch.device("cpu")) == 4
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (80 * 2**30, 80 * 2**30))
    assert ttt._rows_per_pass(model, cfg, 300, cuda) == 64  # the whole step in one pass
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**24, 2**30))
    assert 1 <= ttt._rows_per_pass(model, cfg, 300, cuda) < 64
    monkeypatch.setattr(scoring, "model_device", lambda m: cuda)
    small = scoring._default_batch(model, 300)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (80 * 2**30, 80 * 2**30))
    assert 1 <= small < scoring._default_batch(model, 300) <= 512


def test_fast_path_switches_off_and_on(tiny):
    model, alphabet = tiny
    tokens = batch(alphabet, [UBQ[:20]])
    with torch.no_grad():
        fast = model(tokens)["logits"]
        set_fast_attention(model, False)
        try:
            assert not uses_fast_attention(model)
            assert not any("forward" in m.__dict__ for m in model.modules())
            stock = model(tokens)["logits"]
        finally:
            set_fast_attention(model, True)
    torch.testing.assert_close(fast, stock, rtol=0, atol=1e-4)


@pytest.mark.parametrize("fast", [True, False])
def test_selected_hidden_is_the_full_forward_at_the_selected_rows(fast):
    """Training losses on masked tokens run the last layer at the selected positions only: the
    same hidden states, and the same gradients, as the full forward indexed afterwards (padding,
    a row with no selection, and unequal counts per row included)."""
    model, alphabet = build_esm2(num_layers=3, embed_dim=64, attention_heads=4, seed=1,
                                 fast_attention=fast)
    model.train()
    tokens = encode(alphabet, UBQ[:38])[None].repeat(4, 1)
    tokens[2, 25:] = alphabet.padding_idx
    tokens[2, 24] = alphabet.eos_idx
    generator = torch.Generator().manual_seed(0)
    corrupted, selected = masking.bert_mask(tokens, alphabet, generator, 0.15, 0.1, 0.1,
                                            "amino_acids")
    selected[2, 24:] = False
    selected[3] = False
    assert len(set(selected.sum(1).tolist())) > 1
    params = [p for p in model.parameters() if p.requires_grad]
    full = _final_hidden(model, corrupted)[selected]
    rows = scoring.selected_hidden(model, corrupted, selected)
    assert rows.shape == full.shape and (rows - full).abs().max() < 1e-5
    g_full = torch.autograd.grad(full.square().sum(), params, allow_unused=True)
    g_rows = torch.autograd.grad(rows.square().sum(), params, allow_unused=True)
    for a, b in zip(g_full, g_rows):
        assert (a is None) == (b is None)
        if a is not None:
            assert (a - b).abs().max() <= 1e-4 * a.abs().max()
