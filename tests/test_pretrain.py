"""tttlab-mini: the shipped file loads through stock fair-esm and beats the unigram baseline on chains it
never saw; the pretraining pieces (leakage filter, batches, schedule) behave."""

import argparse
import json
import math

import esm
import pytest
import torch

from tttlab.engine.models import MINI_PATH
from tttlab.training.pretrain import (PretrainConfig, _kmers, collate, heldout_chains, lr_at, make_batches,
                             unigram_log_probs)
from tttlab.engine.scoring import pseudo_perplexity


def test_shipped_file_loads_with_stock_fair_esm():
    assert MINI_PATH.stat().st_size < 20e6
    with torch.serialization.safe_globals([argparse.Namespace]):
        model, alphabet = esm.pretrained.load_model_and_alphabet_local(str(MINI_PATH))
    assert model.num_layers >= 4 and alphabet.prepend_bos


def test_mini_beats_unigram_on_heldout_chains(mini, data_dir):
    model, _ = mini
    meta = json.loads(MINI_PATH.with_suffix(".json").read_text())
    unigram = meta["unigram_log_probs"]
    seqs = heldout_chains(data_dir, n=6, max_len=120, cfg=PretrainConfig.from_dict(meta["config"]))
    n = sum(map(len, seqs))
    model_nll = sum(math.log(pseudo_perplexity(model, s)) * len(s) for s in seqs)
    base_nll = -sum(unigram[c] for s in seqs for c in s)
    assert math.exp(model_nll / n) < math.exp(base_nll / n)


def test_kmers_and_unigram():
    assert _kmers("ABCDE", 3) == {"ABC", "BCD", "CDE"}
    logp = unigram_log_probs(["AAAC"])
    assert logp["A"] > logp["C"] > logp["W"]
    assert sum(math.exp(v) for v in logp.values()) == pytest.approx(1.0)


def test_batches_respect_budget_and_cover_everything():
    cfg = PretrainConfig(tokens_per_batch=600, crop=100)
    lengths = [30, 500, 80, 99, 12, 250, 60, 61]
    batches = make_batches(lengths, cfg, torch.Generator().manual_seed(0))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert max(min(lengths[i], cfg.crop) + 2 for i in b) * len(b) <= cfg.tokens_per_batch


def test_collate_crops_and_pads():
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    rows = [torch.arange(4, 24, dtype=torch.uint8).repeat(10), torch.tensor([5, 6], dtype=torch.uint8)]
    tokens = collate(rows, alphabet, 50, torch.Generator().manual_seed(0))
    assert tokens.shape == (2, 52)
    assert tokens[0, 0] == alphabet.cls_idx and tokens[0, -1] == alphabet.eos_idx
    assert tokens[1, 3] == alphabet.eos_idx and (tokens[1, 4:] == alphabet.padding_idx).all()


def test_schedule_warms_up_then_decays():
    cfg = PretrainConfig(steps=1000, warmup_steps=100, peak_lr=1e-3, final_lr_fraction=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-5)
    assert lr_at(99, cfg) == pytest.approx(1e-3)
    assert lr_at(1000, cfg) == pytest.approx(1e-4)
    assert lr_at(500, cfg) < lr_at(200, cfg)


def _tiny_corpus(folder, cfg):
    import json
    import random

    from tttlab.engine.models import build_esm2
    from tttlab.training.pretrain import _FILTER_FIELDS, Corpus, unigram_log_probs

    rng = random.Random(0)
    aa = "ACDEFGHIKLMNPQRSTVWY"
    seqs = ["".join(rng.choice(aa) for _ in range(rng.randint(30, 80))) for _ in range(60)]
    _, alphabet = build_esm2(1, 16, 2)
    folder.mkdir(parents=True)
    Corpus.encode([(f"t{i}", s) for i, s in enumerate(seqs[:52])], alphabet).save(folder / "train.npz")
    Corpus.encode([(f"v{i}", s) for i, s in enumerate(seqs[52:])], alphabet).save(folder / "val.npz")
    report = {"unigram_log_probs": unigram_log_probs(seqs[:52]), "unigram_val_perplexity": 20.0,
              "filter_settings": {k: getattr(cfg, k) for k in _FILTER_FIELDS}}
    (folder / "corpus_report.json").write_text(json.dumps(report))


def test_pretrain_resumes_bit_exactly_and_continues_from_a_snapshot(tmp_path):
    from tttlab.training.pretrain import PretrainConfig, export_snapshot, pretrain

    cfg = PretrainConfig(num_layers=2, embed_dim=32, attention_heads=2, crop=40, steps=6,
                         tokens_per_batch=256, warmup_steps=2, val_every=2, ckpt_every=1,
                         n_val_sequences=4)
    corpus = tmp_path / "corpus_v2"
    _tiny_corpus(corpus, cfg)
    straight = pretrain(tmp_path, tmp_path / "a", cfg, progress=False)
    pretrain(tmp_path, tmp_path / "b", cfg, max_seconds=1e-9, progress=False)  # stops after 1 step
    resumed = pretrain(tmp_path, tmp_path / "b", cfg, progress=False)
    for (name, p), q in zip(straight["model"].state_dict().items(),
                            resumed["model"].state_dict().values()):
        assert torch.equal(p, q), name
    assert [h["step"] for h in straight["history"]] == [0, 2, 4, 6]
    assert straight["history"][-1]["val_masked_perplexity"] == \
        resumed["history"][-1]["val_masked_perplexity"]
    assert all(h["val_mask_token_perplexity"] > 1 for h in straight["history"])
    with pytest.raises(ValueError, match="other settings"):
        pretrain(tmp_path, tmp_path / "a", PretrainConfig(**{**cfg.__dict__, "steps": 7}))

    # a new machine: only the fp16 snapshot travels; the schedule resumes at its step
    out = export_snapshot(tmp_path / "b", tmp_path / "snap" / "esm2_v2.pt")
    meta = json.loads((tmp_path / "snap" / "esm2_v2.json").read_text())
    assert out["weights_step"] == meta["weights"]["step"] == 6
    longer = PretrainConfig(**{**cfg.__dict__, "steps": 8})
    with pytest.raises(ValueError, match="other settings"):
        pretrain(tmp_path, tmp_path / "c", longer, init=tmp_path / "snap" / "esm2_v2.pt")
    cont = pretrain(tmp_path, tmp_path / "c", cfg, init=tmp_path / "snap" / "esm2_v2.pt",
                    progress=False)
    assert cont["history"][-1]["step"] == 6  # nothing left to train: the weights are the snapshot's
    for p, q in zip(straight["model"].parameters(), cont["model"].parameters()):
        torch.testing.assert_close(p, q, atol=2e-3, rtol=1e-3)  # fp16 rounding only


def test_evaluate_command_reads_the_model_json_and_needs_it(tmp_path, data_dir, capsys):
    from tttlab.cli.main import main
    from tttlab.engine.models import build_esm2, save_fair_esm_checkpoint
    from tttlab.training.pretrain import unigram_log_probs

    model, _ = build_esm2(1, 16, 2, seed=0)
    weights = tmp_path / "esm2_tiny.pt"
    save_fair_esm_checkpoint(model, weights)
    argv = ["pretrain", "--data-dir", str(data_dir), "--evaluate", str(weights), "--heldout", "0"]
    assert main(argv) == 2
    assert "esm2_tiny.json not found" in capsys.readouterr().err
    meta = {"config": {"num_layers": 1, "embed_dim": 16, "attention_heads": 2, "an_old_key": 1},
            "unigram_log_probs": unigram_log_probs(["ACDEFGHIKLMNPQRSTVWY"])}
    weights.with_suffix(".json").write_text(json.dumps(meta))
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["pfam40"] and out["pfam40"]["proteins"] == 40
    # uniform amino acids: the unigram perplexity is 20 on any residues
    assert out["pfam40"]["unigram_perplexity"] == pytest.approx(20.0, abs=1e-3)
    assert out["pfam40"]["pseudo_perplexity"] > 1


def test_bf16_step_matches_the_float32_step_to_bf16_rounding():
    from concurrent.futures import ThreadPoolExecutor

    from tttlab.engine.masking import bert_mask
    from tttlab.engine.models import build_esm2
    from tttlab.training.pretrain import bert_init, optimiser_step

    gen = torch.Generator().manual_seed(0)
    model, alphabet = build_esm2(2, 64, 4, seed=0)
    bert_init(model)
    model.train()
    tokens = torch.randint(4, 24, (4, 66), generator=gen)
    tokens[:, 0], tokens[:, -1] = alphabet.cls_idx, alphabet.eos_idx
    corrupted, selected = bert_mask(tokens, alphabet, gen)
    params = [p for p in model.parameters() if p.requires_grad]
    losses, grads = [], []
    with ThreadPoolExecutor(2) as pool:
        for bf16 in (False, True):
            opt = torch.optim.SGD(params, lr=0.0)  # gradients only; weights unchanged
            loss = optimiser_step(model, opt, params, tokens, corrupted, selected, 1e9, pool, 2,
                                  bf16=bf16)
            losses.append(loss.item())
            grads.append(torch.cat([p.grad.flatten() for p in params if p.grad is not None]))
            assert loss.dtype == torch.float32 and all(p.dtype == torch.float32 for p in params)
    assert losses[1] == pytest.approx(losses[0], rel=1e-2)
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.99
    assert not torch.equal(grads[0], grads[1])  # bf16 really ran


def test_pretraining_progress_figure_draws_curve_bars_and_references():
    import matplotlib

    matplotlib.use("Agg")
    from tttlab.present.plots import pretraining_progress

    history = [{"step": s, "tokens": 8000 * s, "val_masked_perplexity": 16 - s / 100,
                "val_mask_token_perplexity": 18 - s / 100} for s in (0, 50, 100)]
    checkpoints = [{"weights": {"step": s, "tokens": 8000 * s}, "pfam40_ratio": r,
                    "dms_spearman_mean": d, "contacts_p_at_l_long_mean": c}
                   for s, r, d, c in ((100, 0.97, 0.03, 0.08), (50, 0.99, 0.02, 0.07))]
    bars = {"pfam40_ratio_max": 0.85, "dms_spearman_min": 0.1, "contacts_p_at_l_long_min": 0.1}
    fig = pretraining_progress(history, checkpoints, 18.0, {"pfam40_ratio": 0.94}, bars)
    curve, ratio, dms, contacts = fig.axes
    assert len(curve.lines) == 3  # two curves (step 0 left out) + unigram
    assert list(curve.lines[0].get_xdata()) == [0.4, 0.8]
    assert list(ratio.lines[0].get_ydata()) == [0.99, 0.97]  # sorted by tokens
    assert [line.get_ydata()[0] for line in ratio.lines[1:]] == [0.85, 0.94]
    assert contacts.lines[1].get_ydata()[0] == 0.1
