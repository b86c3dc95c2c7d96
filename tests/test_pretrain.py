"""tttlab-mini: the shipped file loads through stock fair-esm and beats the unigram baseline on chains it
never saw; the pretraining pieces (leakage filter, batches, schedule) behave."""

import argparse
import json
import math

import esm
import pytest
import torch

from tttlab.models import MINI_PATH
from tttlab.pretrain import (PretrainConfig, _kmers, collate, heldout_chains, lr_at, make_batches,
                             unigram_log_probs)
from tttlab.scoring import pseudo_perplexity


def test_shipped_file_loads_with_stock_fair_esm():
    assert MINI_PATH.stat().st_size < 20e6
    with torch.serialization.safe_globals([argparse.Namespace]):
        model, alphabet = esm.pretrained.load_model_and_alphabet_local(str(MINI_PATH))
    assert model.num_layers >= 4 and alphabet.prepend_bos


def test_mini_beats_unigram_on_heldout_chains(mini, data_dir):
    model, _ = mini
    meta = json.loads(MINI_PATH.with_suffix(".json").read_text())
    unigram = meta["unigram_log_probs"]
    seqs = heldout_chains(data_dir, n=6, max_len=120)
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
