"""Function case study: header parsing, embedding cache, head, bootstrap metrics and the CLI."""

import json

import numpy as np
import pandas as pd
import pytest

from tttlab.cli import function as function_cli
from tttlab.cli import main as cli
from tttlab.studies import embeddings
from tttlab.studies import function
from tttlab import preset
from tttlab.engine import scoring

SEQS = ["MKTAYIAKQRQISFVKSHFSRQ", "GSHMLEDPVDAFQ", "MSEQNNTEMTFQIQRIYTKDISFEAPNAPHVFQ"]


class Calls:
    """Counts forward passes of a model through a hook."""

    def __init__(self, model):
        self.n = 0
        self.handle = model.register_forward_hook(self)

    def __call__(self, *args):
        self.n += 1

    def close(self):
        self.handle.remove()


def write_fasta(path, records):
    path.write_text("".join(f">{h}\n{s}\n" for h, s in records))
    return path


# ------------------------------------------------------------------------------ headers
def test_parse_good_headers():
    assert function.parse_deeploc_header("Q12981 Endoplasmic.reticulum-U new_test_set") == (
        "Q12981", "Endoplasmic.reticulum", "U")
    assert function.parse_deeploc_header("P1 Lysosome/Vacuole-M") == ("P1", "Lysosome/Vacuole",
                                                                      "M")
    # dual label keeps the first location (Light Attention convention)
    assert function.parse_deeploc_header("P2 Cytoplasm-Nucleus-U test")[1] == "Cytoplasm"


@pytest.mark.parametrize("header", ["Q1", "Q1 Nucleus", "Q1 Nowhere-U", "Q1 Nucleus-Q", ""])
def test_parse_malformed_headers(header):
    with pytest.raises(ValueError, match="malformed DeepLoc header"):
        function.parse_deeploc_header(header)


def test_read_deeploc_names_the_bad_record(tmp_path):
    f = write_fasta(tmp_path / "bad.fasta", [("A1 Nucleus-U", "MKV"), ("A2 Cytosol-S", "MKV")])
    with pytest.raises(ValueError) as err:
        function.read_deeploc(f)
    msg = str(err.value)
    assert "\n" not in msg and "bad.fasta record 2" in msg and "A2 Cytosol-S" in msg


def test_read_shared_localisation_files():
    hard = function.read_deeploc(function_cli._fasta_path("localization/setHARD.fasta"))
    assert len(hard) == 490 and hard["label"].nunique() == 10
    assert set(hard["label"]) == set(function.LOCATIONS)
    assert not hard["sequence"].str.contains("U").any()  # selenocysteine read as X


def test_read_tps_rule_and_split():
    tps = function.read_tps()
    assert tps["label"].value_counts().to_dict() == {"sesq": 476, "mono": 192, "tri": 132,
                                                     "di": 117}
    train, test = function.split(tps, 0.2, seed=0)
    assert len(train) + len(test) == len(tps) and not set(train["id"]) & set(test["id"])
    assert abs(test["label"].value_counts(normalize=True)["sesq"] - 476 / 917) < 0.01
    again = function.split(tps, 0.2, seed=0)[1]
    assert list(again["id"]) == list(test["id"])
    # the 11 repeated TPS sequences stay on one side: no test protein is a training protein
    assert tps["sequence"].duplicated().sum() == 11
    assert not set(test["sequence"]) & set(train["sequence"])


def test_subsample_is_seeded_and_filters_length():
    table = pd.DataFrame({"id": list("abcdef"), "length": [10, 50, 20, 80, 30, 5]})
    a = function.subsample(table, 2, seed=1, max_length=40)
    assert list(a["id"]) == list(function.subsample(table, 2, seed=1, max_length=40)["id"])
    assert len(a) == 2 and (a["length"] <= 40).all()
    assert len(function.subsample(table)) == 6
    cropped = function.subsample(table.assign(sequence="MKVLA"), crop=3)
    assert (cropped["sequence"] == "MKV").all() and (cropped["length"] == 3).all()


# -------------------------------------------------------------------------------- cache
def test_cache_hit_returns_identical_arrays_without_model_calls(tiny, tmp_path):
    model, _ = tiny
    calls = Calls(model)
    try:
        first = function.embed(model, SEQS, cache=tmp_path, progress=False)
        assert calls.n > 0
        n = calls.n
        second = function.embed(model, SEQS, cache=tmp_path, progress=False)
        assert calls.n == n and np.array_equal(first, second)
        residues = function.embed(model, SEQS, pool=None, cache=tmp_path, progress=False)
        assert calls.n > n
        n = calls.n
        again = function.embed(model, SEQS, pool=None, cache=tmp_path, progress=False)
        assert calls.n == n and all(np.array_equal(a, b) for a, b in zip(residues, again))
    finally:
        calls.close()
    assert first.shape == (3, model.embed_dim) and residues[0].shape == (len(SEQS[0]), 64)
    looped = np.concatenate([scoring.representations(model, [s]) for s in SEQS])
    np.testing.assert_allclose(first, looped, atol=1e-5)  # batched + cached == one by one


def test_cache_dir_env_and_crop(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("TTTLAB_CACHE_DIR", str(tmp_path))
    assert embeddings.cache_dir() == tmp_path / "embeddings"
    model, _ = tiny
    long = function.embed(model, [SEQS[2]], max_length=10, progress=False)
    short = function.embed(model, [SEQS[2][:10]], progress=False)
    assert np.array_equal(long, short) and len(list((tmp_path / "embeddings").glob("*.npz"))) == 1


def test_ttt_cache_key_changes_with_config(tiny, tmp_path):
    model, _ = tiny
    cfg = preset(steps=1, grad_accum_steps=1, batch_size=2)
    calls = Calls(model)
    try:
        base = function.embed(model, SEQS[:1], cache=tmp_path, progress=False)
        after, info = function.embed_after_ttt(model, SEQS[:1], cfg, cache=tmp_path,
                                               progress=False)
        n = calls.n
        again, _ = function.embed_after_ttt(model, SEQS[:1], cfg, cache=tmp_path, progress=False)
        assert calls.n == n and np.array_equal(after, again)
        other, _ = function.embed_after_ttt(model, SEQS[:1], preset(steps=1, grad_accum_steps=1,
                                            batch_size=2, lr=1e-2), cache=tmp_path,
                                            progress=False)
        assert calls.n > n
    finally:
        calls.close()
    assert not np.allclose(base, after) and not np.allclose(after, other)
    assert list(info.columns) == ["ppl_after", "loss_first", "loss_last", "ttt_seconds", "n_homologs"]
    assert (info["n_homologs"] == 0).all()  # single-sequence TTT
    # model restored after each protein: base embeddings unchanged, fingerprint unchanged
    np.testing.assert_array_equal(base, function.embed(model, SEQS[:1], cache=False,
                                                       progress=False))
    zero, _ = function.embed_after_ttt(model, SEQS[:1], preset(steps=0), cache=False,
                                       progress=False)
    np.testing.assert_allclose(zero, base, atol=1e-6)


def test_fingerprint_follows_weights(tiny):
    model, _ = tiny
    before = embeddings.model_fingerprint(model)
    from tttlab.engine.ttt import customized

    with customized(model, SEQS[0], preset(steps=1, grad_accum_steps=1), progress=False):
        assert embeddings.model_fingerprint(model) != before
    assert embeddings.model_fingerprint(model) == before


def test_sampled_pseudo_perplexity(tiny):
    model, _ = tiny
    exact = scoring.pseudo_perplexity(model, SEQS[2])
    assert embeddings.sampled_pseudo_perplexity(model, SEQS[2], n_positions=100) == pytest.approx(
        exact, rel=1e-5)
    a = embeddings.sampled_pseudo_perplexity(model, SEQS[2], n_positions=8, seed=1)
    assert a == embeddings.sampled_pseudo_perplexity(model, SEQS[2], n_positions=8, seed=1)
    assert a != pytest.approx(exact, rel=1e-6) and a > 1


# ------------------------------------------------------------------------ head & metrics
def blobs(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.choice(["a", "b", "c"], n)
    centres = {"a": 0.0, "b": 3.0, "c": -3.0}
    X = rng.normal(size=(n, 8)) + np.array([centres[v] for v in y])[:, None]
    return X, y


def test_head_on_synthetic_embeddings():
    X, y = blobs(300, 0)
    head = function.train_head(X * 100 + 5, y)  # standardised inside: scale does not matter
    Xt, yt = blobs(200, 1)
    acc = (head.predict(Xt * 100 + 5) == yt).mean()
    assert acc > 0.9 and list(head.classes_) == ["a", "b", "c"]
    m = function.bootstrap_metrics(yt, head.predict(Xt * 100 + 5), np.full(200, "a"), n_boot=200)
    assert m.loc["accuracy", "before"] == pytest.approx(acc)
    assert m.loc["accuracy", "after"] == pytest.approx((yt == "a").mean())
    assert m.loc["accuracy", "delta_high"] < 0  # predicting one class is clearly worse


def test_scores_match_sklearn():
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(0)
    true, pred = rng.integers(0, 4, 50), rng.integers(0, 5, 50)
    acc, f1 = function._scores(true, pred, 5)
    assert acc == pytest.approx(accuracy_score(true, pred))
    assert f1 == pytest.approx(f1_score(true, pred, labels=np.unique(true), average="macro",
                                        zero_division=0))


def test_bootstrap_behaviour():
    rng = np.random.default_rng(0)
    y = rng.choice(list("abc"), 400)
    noisy = np.where(rng.random(400) < 0.7, y, rng.choice(list("abc"), 400))
    perfect = function.bootstrap_metrics(y, y, y, n_boot=100)
    assert (perfect[["before_low", "before_high", "after"]] == 1).all().all()
    assert (perfect[["delta", "delta_low", "delta_high"]] == 0).all().all()
    big = function.bootstrap_metrics(y, noisy, y, n_boot=300, seed=3)
    assert big.equals(function.bootstrap_metrics(y, noisy, y, n_boot=300, seed=3))
    assert (big["before_low"] <= big["before"]).all()
    assert (big["before"] <= big["before_high"]).all()
    small = function.bootstrap_metrics(y[:40], noisy[:40], y[:40], n_boot=300, seed=3)
    width = lambda m: m.loc["accuracy", "before_high"] - m.loc["accuracy", "before_low"]  # noqa
    assert width(small) > 2 * width(big)
    with pytest.raises(ValueError):
        function.bootstrap_metrics([], [], [])


def test_protocol_and_pca_on_tiny(tiny, tmp_path):
    model, _ = tiny
    rng = np.random.default_rng(0)
    aa = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    train = pd.DataFrame({"id": [f"t{i}" for i in range(12)], "label": ["x", "y", "z"] * 4,
                          "sequence": ["".join(rng.choice(aa, 20)) for _ in range(12)]})
    test = train.iloc[:3].assign(label=["x", "y", "w"])  # "w" unseen by the head
    result = function.run_protocol(model, train, test, preset(steps=1, grad_accum_steps=1),
                                   n_boot=50, cache=tmp_path, progress=False)
    t = result.table
    assert len(t) == 3 and t.loc[2, "p_true_before"] == 0
    assert t["p_true_after"].between(0, 1).all()
    assert result.confusion("after").to_numpy().sum() == 3
    summary = result.summary()
    assert summary["n_train"] == 12 and summary["n_test"] == 3
    right = lambda which: int((t[f"pred_{which}"] == t["label"]).sum())  # noqa: E731
    assert summary["correct_before"] == right("before")
    assert summary["correct_after"] == right("after")
    change = summary["correct_after"] - summary["correct_before"]
    assert change == summary["fixed"] - summary["broken"]
    assert summary["changed"] == (t["pred_before"] != t["pred_after"]).sum()
    assert summary["fixed"] + summary["broken"] <= summary["changed"]
    lo, hi = summary["accuracy_delta_ci95"]
    assert lo <= round(float(result.metrics.loc["accuracy", "delta"]), 4) <= hi
    both = function.summary_table({"a": result, "b": result})
    assert both.shape == (4, 13) and list(both["metric"]) == ["accuracy", "macro_f1"] * 2
    pts = function.pca_shift(result, n=2)
    assert (pts["set"] == "test").sum() == 2 and pts["pc1_after"].notna().sum() == 2


# ---------------------------------------------------------------------------------- CLI
@pytest.fixture()
def cli_files(tiny, tmp_path, monkeypatch):
    from tttlab.engine.models import save_fair_esm_checkpoint

    monkeypatch.setenv("TTTLAB_CACHE_DIR", str(tmp_path / "cache"))
    model_path = tmp_path / "esm2_tiny.pt"
    save_fair_esm_checkpoint(tiny[0], model_path)
    rng = np.random.default_rng(1)
    aa = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    locs = ["Nucleus-U", "Cytoplasm-S", "Extracellular-S"]
    train = write_fasta(tmp_path / "train.fasta", [
        (f"P{i} {locs[i % 3]}", "".join(rng.choice(aa, 25))) for i in range(9)])
    test = write_fasta(tmp_path / "test.fasta", [
        (f"Q{i} {locs[i % 3]} new_test_set", "".join(rng.choice(aa, 25))) for i in range(4)])
    return model_path, train, test


def test_cli_json(cli_files, capsys):
    model_path, train, test = cli_files
    more = train.with_name("train2.fasta")  # a second --train file: other ids, other sequences
    more.write_text(train.read_text().replace(">P", ">R").replace("A", "C"))
    code = cli.main(["function", "--train", str(train), "--train", str(more), "--test",
                     str(test), "--model", str(model_path), "--max-test", "2", "--ttt-steps", "1",
                     "--grad-accum", "2", "--json"])
    assert code == 0
    assert cli.main(["function", "--train", str(train), "--train", str(train), "--test",
                     str(test), "--model", str(model_path), "--json"]) == 2  # same file twice
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("n_train", "n_test", "accuracy_before", "accuracy_after", "macro_f1_before",
                "macro_f1_after", "seconds"):
        assert key in out
    assert out["n_train"] == 18 and out["n_test"] == 2 and 0 <= out["accuracy_after"] <= 1


def test_cli_malformed_header_exits_2(cli_files, tmp_path, capsys):
    model_path, train, _ = cli_files
    bad = write_fasta(tmp_path / "bad.fasta", [("Q9 Nucleus-U", "MKV"), ("Q10 Moon-U", "MKV")])
    code = cli.main(["function", "--train", str(train), "--test", str(bad), "--model",
                     str(model_path), "--json"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("tttlab: error:") and "bad.fasta record 2" in err
    assert cli.main(["function", "--test", str(bad)]) == 2  # no --train
    assert cli.main(["function", "--tps", "--max-test", "0"]) == 2


def test_damaged_cache_entry_is_recomputed_and_unwritable_cache_only_warns(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"x": np.arange(3.0)}

    first = embeddings._cached("k1", compute, tmp_path)
    entry = embeddings._path("k1", tmp_path)
    entry.write_bytes(entry.read_bytes()[:20])  # truncated (BadZipFile when read)
    again = embeddings._cached("k1", compute, tmp_path)
    np.testing.assert_array_equal(first["x"], again["x"])
    assert len(calls) == 2 and embeddings._load("k1", tmp_path) is not None  # replaced
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with pytest.warns(UserWarning, match="not writable"):
        out = embeddings._cached("k2", compute, blocked / "cache")
    np.testing.assert_array_equal(out["x"], np.arange(3.0))


def test_duplicate_ids_refused_and_train_test_overlap_reported():
    train = pd.DataFrame({"id": ["a", "b"], "label": ["x", "y"], "sequence": ["MKT", "ACD"]})
    test = pd.DataFrame({"id": ["c", "c"], "label": ["x", "y"], "sequence": ["MKV", "ACE"]})
    with pytest.raises(ValueError, match="duplicate id.*test set, e.g. c"):
        function.check_sets(train, test)
    test = pd.DataFrame({"id": ["c", "d"], "label": ["x", "y"], "sequence": ["MKT", "ACE"]})
    with pytest.warns(UserWarning, match="1 test protein.*e.g. c"):
        function.check_sets(train, test)
