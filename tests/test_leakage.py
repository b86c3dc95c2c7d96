"""The corpus leakage filter: exact k-mer detection, 12-mer counting, groups, sequence borders."""

import random

import numpy as np
import pytest

from tttlab.training.leakage import KmerIndex, shared_kmer_counts, shares_exact_kmer, similar_to
from tttlab.training.pretrain import _kmers

AA = "ACDEFGHIKLMNPQRSTVWY"


def _random(n, seed):
    rng = random.Random(seed)
    return "".join(rng.choice(AA) for _ in range(n))


def test_exact_20mer_found_anywhere_and_only_when_shared():
    evals = [_random(300, 1)]
    inner = evals[0][137:157]
    seqs = [_random(40, 2) + inner + _random(40, 3),  # shares one 20-mer
            _random(40, 4) + inner[:19] + _random(40, 5),  # only 19 residues
            inner, _random(500, 6)]
    assert shares_exact_kmer(seqs, evals).tolist() == [True, False, True, False]


def test_agrees_with_python_sets_on_random_mutants():
    rng = random.Random(0)
    evals = [_random(200, s) for s in range(5)]
    seqs = []
    for s in range(60):  # mutants of evaluation proteins at various densities, and unrelated ones
        base = list(rng.choice(evals)) if s % 3 else list(_random(200, 100 + s))
        for _ in range(rng.randint(0, 40)):
            base[rng.randrange(len(base))] = rng.choice(AA)
        seqs.append("".join(base))
    want20 = [bool(_kmers(s, 20) & set().union(*(_kmers(e, 20) for e in evals))) for s in seqs]
    assert shares_exact_kmer(seqs, evals).tolist() == want20
    ev12 = set().union(*(_kmers(e, 12) for e in evals))
    want12 = [sum(s[i:i + 12] in ev12 for i in range(len(s) - 11)) for s in seqs]
    got12 = shared_kmer_counts(seqs, KmerIndex.build([evals], 12), 1)[:, 0]
    assert got12.tolist() == want12


def test_x_counts_as_a_letter_and_separators_never_bridge():
    e = "MKTAYIAKQRQISFVKSHFSXQLEERLGLIEVQ"
    assert shares_exact_kmer([e[3:30]], [e]).tolist() == [True]  # holds the X
    # the 20-mer spans the border between two training sequences: not a hit for either
    a, b = e[:10], e[10:30]
    assert shares_exact_kmer([a, b[:19]], [e]).tolist() == [False, False]
    assert shares_exact_kmer(["*" + e[:19] + "*" + e[19:40]], [e]).tolist() == [False]


def test_groups_attributed_and_homology_rule():
    g0, g1 = _random(120, 7), _random(120, 8)
    three = g1[0:12] + "W" + g1[40:52] + "W" + g1[80:92]  # three separate 12-mers of g1
    two = g1[0:12] + "W" + g1[40:52]
    got = similar_to([g0[10:40], three, two, _random(100, 9)], [[g0], [g1]])
    assert got.tolist() == [[True, False], [False, True], [False, False], [False, False]]


def test_chunking_does_not_change_counts():
    evals = [_random(400, 11)]
    seqs = [evals[0][i:i + 60] for i in range(0, 340, 17)] + [_random(80, i) for i in range(20)]
    index = KmerIndex.build([evals], 20)
    whole = shared_kmer_counts(seqs, index, 1)
    np.testing.assert_array_equal(whole, shared_kmer_counts(seqs, index, 1, chunk_residues=100))


def test_too_many_groups_and_bad_k_rejected():
    with pytest.raises(ValueError, match="32"):
        KmerIndex.build([["A" * 30]] * 33, 20)
    with pytest.raises(ValueError, match="12 or 20"):
        KmerIndex.build([["A" * 30]], 15)


def test_filter_corpus_removes_duplicates_evaluation_and_validation_neighbours():
    from tttlab.training.pretrain import PretrainConfig, _is_val, filter_corpus

    cfg = PretrainConfig(val_modulus=3)
    evals = {"dms": [_random(200, 20)], "structures": [_random(200, 21)]}
    pool = [_random(150, 30 + i) for i in range(30)]
    records = [(f"p{i}", s) for i, s in enumerate(pool)]
    records += [("dup", pool[0]), ("short", "ACDE"), ("odd", "ACDEFGHIKLMNPQRSTVWYB" * 2),
                ("hit_dms", evals["dms"][0][:50] + _random(60, 40)),
                ("hit_both", evals["dms"][0][:25] + evals["structures"][0][:25])]
    val_seq = next(s for s in pool if _is_val(s, 3))
    records.append(("near_val", val_seq[:30] + _random(50, 41)))
    train, val, report = filter_corpus(records, evals, cfg, progress=False)
    ids = {r for r, _ in train}
    assert report["unique_sequences"] == len(records) - 1
    assert report["removed_short_or_nonstandard"] == 2
    assert report["removed_similar_to_dms"] == 2  # first reason wins for hit_both
    assert report["removed_similar_to_structures"] == 0
    assert "near_val" not in ids and not ids & {"hit_dms", "hit_both", "short", "odd"}
    assert all(_is_val(s, 3) for _, s in val) and not any(_is_val(s, 3) for _, s in train)
    assert not shares_exact_kmer([s for _, s in train], [s for _, s in val]).any()
