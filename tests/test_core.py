"""The engine's contract: config, loading, exact reset, determinism, scoring equivalences, bad inputs."""

import dataclasses
import json

import numpy as np
import pytest
import torch

import tttlab
from tttlab.cli import main as cli
from tttlab.engine.config import PRESETS, TTTConfig, preset
from tttlab.common.sequences import STANDARD_AA
from tttlab.engine.masking import bert_mask
from tttlab.engine.models import (build_esm2, load_model, save_contact_regression,
                           save_fair_esm_checkpoint)
from tttlab.common.sequences import check_sequence
from tttlab.engine.scoring import masked_marginals, parse_mutant, pseudo_perplexity, score_mutants, wt_marginals
from tttlab.engine.ttt import customize, customized, snapshot

from helpers import stock_loop_marginals

UBQ = "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG"
FAST = dict(steps=2, grad_accum_steps=2, batch_size=2)


# ----------------------------------------------------------------------------- config
def test_defaults_mirror_published_method():
    cfg = TTTConfig()
    assert (cfg.lr, cfg.batch_size, cfg.grad_accum_steps, cfg.steps) == (4e-4, 4, 16, 30)
    assert (cfg.momentum, cfg.weight_decay, cfg.mask_ratio, cfg.crop_size) == (0, 0, 0.15, 1024)
    assert (cfg.bert_replace, cfg.bert_keep, cfg.seed, cfg.loss) == (0.1, 0.1, 0, "all_tokens")
    big = PRESETS["esm2_t33_650M_UR50D"]
    assert (big.lr, big.batch_size, big.grad_accum_steps) == (4e-5, 4, 4)
    mini = PRESETS["tttlab-mini"]  # chosen on held-out sequences (benchmarks/tune_mini_preset.py)
    assert (mini.lr, mini.batch_size, mini.grad_accum_steps, mini.steps) == (0.4, 4, 4, 30)


def test_config_is_frozen_and_validated():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TTTConfig().steps = 3
    assert preset("esm2_t33_650M_UR50D", steps=5).steps == 5
    assert PRESETS["esm2_t33_650M_UR50D"].steps == 30  # presets never mutate
    for bad in (dict(loss="mse"), dict(trainable="half"), dict(batch_size=0), dict(steps=-1),
                dict(keep_best=True)):
        with pytest.raises(ValueError):
            TTTConfig(**bad)
    with pytest.raises(ValueError, match="unknown TTTConfig field"):
        preset(stepz=3)


# ----------------------------------------------------------------------------- loading
def test_local_checkpoint_roundtrip_uses_fair_esm_format(tiny, tmp_path):
    model, _ = tiny
    path = tmp_path / "esm2_tiny.pt"
    save_fair_esm_checkpoint(model, path)
    loaded, alphabet = load_model(path, device="cpu")
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        if not k.startswith("contact_head.regression"):
            assert torch.equal(a, b), k
    assert loaded.lm_head.weight is loaded.embed_tokens.weight
    assert tttlab.preset_for(loaded) == TTTConfig()  # unknown stem: the published 35M defaults
    named = tmp_path / "esm2_t33_650M_UR50D.pt"  # a local copy of a real ESM-2 keeps its preset
    save_fair_esm_checkpoint(model, named)
    save_contact_regression(model, tmp_path / "esm2_t33_650M_UR50D-contact-regression.pt")
    big, _ = load_model(named, device="cpu")
    assert tttlab.preset_for(big, steps=3) == preset("esm2_t33_650M_UR50D", steps=3)
    assert preset(str(named)) == preset("esm2_t33_650M_UR50D")  # CLI --model PATH: same preset
    from tttlab.engine.models import MINI_PATH

    assert preset(str(MINI_PATH)) == preset("tttlab-mini")


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        load_model("esm3_large")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "esm2_missing.pt")
    (tmp_path / "weights.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="esm2"):
        load_model(tmp_path / "weights.pt")


class _Planted:
    """A pickle that, when unpickled, writes a marker file (what a malicious checkpoint would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("planted", ["model", "regression"])
def test_code_carrying_checkpoints_refused_even_with_the_unsafe_env_variable(
        tmp_path, monkeypatch, tiny, planted):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # flips torch.load's default
    marker = tmp_path / "pwned"
    path = tmp_path / "esm2_tiny.pt"
    save_fair_esm_checkpoint(tiny[0], path)
    save_contact_regression(tiny[0], tmp_path / "esm2_tiny-contact-regression.pt")
    target = path if planted == "model" else tmp_path / "esm2_tiny-contact-regression.pt"
    torch.save({"cfg": {}, "model": {}, "x": _Planted(marker)}, target)
    with pytest.raises(ValueError, match="refused") as err:
        load_model(path, device="cpu")
    assert not marker.exists() and "\n" not in str(err.value)


def test_empty_and_foreign_checkpoints_give_one_line_errors(tmp_path):
    empty = tmp_path / "esm2_empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="not a readable"):
        load_model(empty, device="cpu")
    text = tmp_path / "esm2_text.pt"  # torch.load raises KeyError on these bytes
    text.write_bytes(b"junk\n")
    with pytest.raises(ValueError, match="not a readable"):
        load_model(text, device="cpu")
    foreign = tmp_path / "esm2_foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(ValueError, match="needs 'cfg' and 'model'"):
        load_model(foreign, device="cpu")
    tensor = tmp_path / "esm2_tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(ValueError, match="holds a Tensor"):
        load_model(tensor, device="cpu")


def test_cuda_without_cuda_is_a_one_line_error(monkeypatch):
    from tttlab.engine.models import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu0")
    assert resolve_device("cpu").type == "cpu"


def test_named_model_offline_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RuntimeError, match="esm2_t6_8M_UR50D.pt is missing"):
        load_model("esm2_t6_8M_UR50D")


# ------------------------------------------------------------------------------- masking
def test_bert_mask_rates_and_specials(tiny):
    _, alphabet = tiny
    tokens = torch.tensor([[alphabet.cls_idx] + [alphabet.get_idx("A")] * 2000 + [alphabet.eos_idx]])
    corrupted, selected = bert_mask(tokens, alphabet, torch.Generator().manual_seed(0))
    assert not selected[0, 0] and not selected[0, -1]
    assert 0.13 < selected.float().mean() < 0.17
    masked = (corrupted == alphabet.mask_idx) & selected
    assert 0.75 < masked.sum() / selected.sum() < 0.85
    assert torch.equal(corrupted[~selected], tokens[~selected])


# ---------------------------------------------------------------------------------- TTT
def test_reset_is_bit_exact_and_keeps_tie(tiny):
    model, _ = tiny
    before = snapshot(model)
    with customized(model, UBQ, progress=False, **FAST) as result:
        changed = any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert changed and len(result.history) == 3
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.lm_head.weight is model.embed_tokens.weight
    assert not model.training


def test_customized_restores_each_module_mode_and_the_callers_gradients(tiny):
    model, _ = tiny
    model.eval()
    model.layers[0].train()  # a user's mixed modes, e.g. dropout on in one block
    weight = model.layers[1].fc1.weight
    weight.grad = torch.full_like(weight, 0.5)
    own = weight.grad
    try:
        with customized(model, UBQ, progress=False, **FAST):
            pass
        assert model.layers[0].training and not model.training and not model.layers[1].training
        assert weight.grad is own and torch.equal(own, torch.full_like(weight, 0.5))
        assert all(p.grad is None for n, p in model.named_parameters() if "layers.1.fc1.w" not in n)
    finally:
        weight.grad = None
        model.eval()


def test_reset_on_error(tiny):
    model, _ = tiny
    before = snapshot(model)
    with pytest.raises(KeyError):
        with customized(model, UBQ, progress=False, **FAST):
            raise KeyError("boom")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_embedding_and_tied_head_stay_frozen(tiny):
    model, _ = tiny
    emb = model.embed_tokens.weight.detach().clone()
    with customized(model, UBQ, progress=False, **FAST):
        assert torch.equal(model.embed_tokens.weight, emb)


def test_ttt_is_deterministic_for_a_seed(tiny):
    model, _ = tiny
    runs = []
    for _ in range(2):
        with customized(model, UBQ, progress=False, **FAST) as r:
            runs.append(([h["loss"] for h in r.history[1:]], model.layers[0].fc1.weight.clone()))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])
    with customized(model, UBQ, progress=False, seed=1, **FAST) as r:
        assert [h["loss"] for h in r.history[1:]] != runs[0][0]


def test_step_sums_micro_batch_gradients_as_published(tiny, monkeypatch):
    """ProteinTTT calls backward() on every micro-batch's mean loss without scaling: one optimiser
    step moves the weights by -lr x the SUM of the grad_accum_steps micro-batch gradients."""
    from tttlab.engine import ttt

    model, alphabet = tiny
    start = snapshot(model)
    seen = []
    real_corrupt = ttt.corrupt

    def recording_corrupt(tokens, *args, **kwargs):
        out = real_corrupt(tokens, *args, **kwargs)
        seen.append((tokens.clone(), out[0].clone()))
        return out

    monkeypatch.setattr(ttt, "corrupt", recording_corrupt)
    lr = 0.05
    with customized(model, UBQ[:40], progress=False, steps=1, batch_size=2, grad_accum_steps=3,
                    lr=lr):
        stepped = snapshot(model)
    assert len(seen) == 3
    assert all(p.grad is None for p in model.parameters())  # no stale gradients left behind
    params = dict(model.named_parameters())
    model.train()
    for tokens, corrupted in seen:  # reference: plain backward per micro-batch, no scaling
        logits = model(corrupted)["logits"]
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()
    model.eval()
    name = "layers.0.fc1.weight"
    expected = start[name] - lr * params[name].grad
    model.zero_grad(set_to_none=True)
    torch.testing.assert_close(stepped[name], expected, rtol=1e-4, atol=1e-6)
    # and not the mean: a third of that move would be far off
    assert not torch.allclose(stepped[name] - start[name], (expected - start[name]) / 3, atol=1e-6)


def test_long_sequences_are_cropped(tiny):
    model, _ = tiny
    long_seq = (UBQ * 4)[:300]
    with customized(model, long_seq, progress=False, crop_size=64, **FAST) as r:
        assert np.isfinite(r.history[-1]["loss"])


def test_callback_and_keep_best(tiny):
    model, _ = tiny
    calls = []
    cfg = preset(steps=3, batch_size=2, grad_accum_steps=1, eval_every=1, keep_best=True)
    with customized(model, UBQ[:30], cfg, progress=False,
                    callback=lambda step, m: calls.append(step) or {"metric": step * 2}) as r:
        assert calls == [0, 1, 2, 3] and r.table()["metric"].tolist() == [0, 2, 4, 6]
        best = min(h["pseudo_perplexity"] for h in r.history)
        assert r.pseudo_perplexity_after == best
        assert pseudo_perplexity(model, UBQ[:30]) == pytest.approx(best, rel=1e-6)


def test_ttt_lowers_pseudo_perplexity_of_its_protein(mini):
    model, _ = mini
    seq = UBQ
    before = pseudo_perplexity(model, seq)
    with customized(model, seq, preset("tttlab-mini", steps=6), progress=False):
        after = pseudo_perplexity(model, seq)
    assert after < before * 0.99
    assert pseudo_perplexity(model, seq) == pytest.approx(before, rel=1e-6)


# ------------------------------------------------------------------------------ scoring
def test_batched_pseudo_perplexity_equals_one_position_loop(tiny):
    model, alphabet = tiny
    seq = UBQ[:40]
    batched = masked_marginals(model, seq, batch_size=16)
    looped = stock_loop_marginals(model, alphabet, seq)  # same model, one position per pass
    # float32 rounding: the engine runs the last layer at the masked rows only (other kernels);
    # the random model's logits reach ~25, so allow 1e-5 relative on top of 1e-5 absolute
    np.testing.assert_allclose(batched, looped, rtol=1e-5, atol=1e-5)
    ppl_loop = float(np.exp(-np.mean([looped[i][STANDARD_AA.index(c)] for i, c in enumerate(seq)])))
    assert pseudo_perplexity(model, seq, batch_size=7) == pytest.approx(ppl_loop, rel=1e-5)


def test_sliding_window_matches_whole_sequence_when_short(tiny, monkeypatch):
    model, _ = tiny
    seq = UBQ
    whole = masked_marginals(model, seq)
    import tttlab.engine.scoring as scoring

    monkeypatch.setattr(scoring, "max_residues", lambda m: 30)
    windowed = masked_marginals(model, seq)
    assert windowed.shape == whole.shape and np.isfinite(windowed).all()
    assert not np.allclose(windowed, whole)  # windows see less context
    # the first 16 residues share one window, the row's first 32 tokens (BOS + 31 residues, no
    # EOS), as in ProteinGym (tests/test_proteingym_windows.py checks every position)
    assert dict(scoring._window_groups(seq, model))[(0, 32)] == list(range(16))


def test_score_mutants_additive_and_methods(tiny):
    model, _ = tiny
    mm = masked_marginals(model, UBQ)
    singles = score_mutants(model, UBQ, ["M1A", "Q2K"], marginals=mm)
    double = score_mutants(model, UBQ, ["M1A:Q2K"], marginals=mm)
    assert double[0] == pytest.approx(singles.sum())
    col = STANDARD_AA.index
    assert singles[0] == pytest.approx(mm[0, col("A")] - mm[0, col("M")])
    wt = score_mutants(model, UBQ, ["M1A"], method="wt_marginals")
    assert wt[0] == pytest.approx(wt_marginals(model, UBQ)[0, col("A")]
                                  - wt_marginals(model, UBQ)[0, col("M")])
    pll = score_mutants(model, UBQ[:20], ["M1A"], method="pseudo_likelihood")
    assert np.isfinite(pll).all()


@pytest.mark.parametrize("bad, message", [
    ("A1C", "wild type at 1 is M"), ("M100A", "out of range"), ("M1B", "non-standard"),
    ("", "empty"), ("M1", "malformed"), ("M1A:M1C", "mutated twice")])
def test_bad_mutants_name_the_entry(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_mutant(UBQ, bad)


def test_duplicate_mutants_rejected(tiny):
    with pytest.raises(ValueError, match="duplicate mutant entry: M1A"):
        score_mutants(tiny[0], UBQ, ["M1A", "M1A"], marginals=np.zeros((len(UBQ), 20)))


@pytest.mark.parametrize("seq", ["", "   ", "MKB1", "MK*", "XXXX", "x"])
def test_bad_sequences_rejected(seq):
    with pytest.raises(ValueError):
        check_sequence(seq)
    assert check_sequence(" mk x\n") == "MKX"


# ---------------------------------------------------------------------------------- CLI
def test_cli_perplexity_json_on_fasta(tmp_path, capsys, monkeypatch, tiny):
    monkeypatch.setattr(tttlab.engine.models, "MINI_PATH", tmp_path / "esm2_tiny.pt")
    save_fair_esm_checkpoint(tiny[0], tmp_path / "esm2_tiny.pt")
    fasta = tmp_path / "two.fasta"
    fasta.write_text(f">ubq human ubiquitin\n{UBQ[:40]}\n>short\nMKTAYIAKQR\n")
    assert cli.main(["perplexity", "--fasta", str(fasta), "--ttt-steps", "1", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in rows] == ["ubq", "short"]
    assert set(rows[0]) == {"id", "length", "pseudo_perplexity_before", "pseudo_perplexity_after",
                            "n_homologs", "homolog_source", "seconds"}
    assert (rows[0]["n_homologs"], rows[0]["homolog_source"]) == (0, None)  # single-sequence TTT
    assert rows[0]["length"] == 40


@pytest.mark.parametrize("argv, message", [
    (["perplexity", "MKB"], "letters outside"), (["perplexity", ""], "empty"),
    (["perplexity", "--fasta", "/no/such.fasta"], "cannot read FASTA"),
    (["perplexity"], "give a SEQUENCE"), (["perplexity", "MK", "--model", "nope"], "unknown model")])
def test_cli_bad_input_one_line(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tttlab: error:") and message in err and len(err.strip().splitlines()) == 1


def test_cli_empty_fasta(tmp_path, capsys):
    (tmp_path / "e.fasta").write_text("not a fasta\n")
    assert cli.main(["perplexity", "--fasta", str(tmp_path / "e.fasta")]) == 2
    assert "no FASTA records" in capsys.readouterr().err


def test_random_model_is_reproducible():
    a, _ = build_esm2(2, 32, 4, seed=3)
    b, _ = build_esm2(2, 32, 4, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_masked_tokens_loss_is_a_mean_of_per_copy_means(tiny):
    """ProteinTTT's cross_entropy: average over each copy's selected positions, then over copies
    (so one pass over a whole step sums to the same gradient as its micro-batches)."""
    from tttlab.engine.ttt import _loss

    model, alphabet = tiny
    cfg = preset(loss="masked_tokens", mask_ratio=0.3)
    tokens = torch.tensor([[alphabet.cls_idx] + [alphabet.get_idx(c) for c in UBQ[:30]]
                           + [alphabet.eos_idx]]).repeat(3, 1)
    with torch.no_grad():
        corrupted, selected = bert_mask(tokens, alphabet, torch.Generator().manual_seed(5), 0.3)
        loss = _loss(model, tokens, corrupted, selected, cfg)
        logits = model(corrupted)["logits"]
        per_copy = [torch.nn.functional.cross_entropy(logits[b][selected[b]],
                                                      tokens[b][selected[b]]) for b in range(3)]
    assert float(loss) == pytest.approx(float(torch.stack(per_copy).mean()), rel=1e-5)


def test_wt_marginals_long_protein_windows_and_progress(tiny, capsys):
    from tttlab.engine.scoring import max_residues, wt_marginals

    model, _ = tiny
    seq = (UBQ * 40)[: max_residues(model) + 40]  # just past the context: a few windows
    out = wt_marginals(model, seq, progress=True)
    assert out.shape == (len(seq), 20) and np.isfinite(out).all()
    np.testing.assert_allclose(np.exp(out).sum(1) <= 1 + 1e-5, True)
    assert "wild-type marginals" in capsys.readouterr().err


def test_keep_best_by_any_callback_value(tiny):
    """The best step can be chosen by any value the callback reports, highest or lowest, step 0
    (the untouched model) included, as ProteinTTT keeps ESMFold's most confident step."""
    model, _ = tiny
    start = snapshot(model)
    scores = {0: 1.0, 1: 3.0, 2: 2.0, 3: 3.0}  # a made-up confidence per step: best at step 1
    seen = {}

    def confidence(step, m):
        seen[step] = snapshot(m)
        return {"confidence": scores[step]}

    cfg = preset(steps=3, batch_size=2, grad_accum_steps=1, keep_best=True,
                 keep_best_by="confidence", keep_best_mode="max")
    with customized(model, UBQ[:30], cfg, progress=False, callback=confidence) as r:
        assert r.best_step == 1  # the first of the tied maxima
        assert all(torch.equal(v, seen[1][k]) for k, v in model.state_dict().items())
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())
    worst = preset(steps=3, batch_size=2, grad_accum_steps=1, keep_best=True,
                   keep_best_by="confidence", keep_best_mode="min")
    with customized(model, UBQ[:30], worst, progress=False, callback=confidence) as r:
        assert r.best_step == 0  # the untouched model can win
        assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="callback must return it"):
        with customized(model, UBQ[:30], cfg, progress=False):
            pass
    assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="keep_best_mode"):
        preset(keep_best_mode="best")
