"""DMS loading/validation (tttlab.data.dms), fitness metrics and scoring (tttlab.studies.fitness), the CLI."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from tttlab.cli import main as cli
from tttlab.studies import fitness
from tttlab.data.dms import STOP, load_dms

WT = "MKTAYIAKQR"


def _mutate(wt, mutant):
    seq = list(wt)
    for sub in mutant.split(":"):
        if sub[1:-1].isdigit():
            seq[int(sub[1:-1]) - 1] = sub[-1]
    return "".join(seq)


def _write(tmp_path, rows, name="toy.csv", wt=WT):
    """rows: (mutant, score) or (mutant, score, mutated_sequence)."""
    table = pd.DataFrame([{"mutant": r[0], "mutated_sequence": r[2] if len(r) > 2 else
                           _mutate(wt, r[0]), "DMS_score": r[1]} for r in rows])
    path = tmp_path / name
    table.to_csv(path, index=False)
    return path


def _fasta(tmp_path, seq=WT):
    path = tmp_path / "wt.fasta"
    path.write_text(f">wt\n{seq}\n")
    return path


GOOD = [("M1A", 0.1), ("K2E", -1.0), ("T3S", 0.5), ("A4G:Y5F", -0.3), ("R10K", 1.2)]


# ------------------------------------------------------------------------ loading
def test_infers_and_verifies_wild_type(tmp_path):
    assay = load_dms(_write(tmp_path, GOOD))
    assert assay.wild_type == WT and assay.wt_source == "inferred"
    assert list(assay.table.n_mutations) == [1, 1, 1, 2, 1] and assay.n_total == 5
    assert assay.name == "toy" and assay.dropped.empty
    assert load_dms(_write(tmp_path, GOOD), wt_fasta=_fasta(tmp_path)).wild_type == WT


def test_gzipped_and_shared_assay(tmp_path, data_dir):
    table = pd.read_csv(_write(tmp_path, GOOD))
    table.to_csv(tmp_path / "toy2.csv.gz", index=False)
    assert len(load_dms(tmp_path / "toy2.csv.gz")) == 5
    assay = load_dms("A4_HUMAN_Seuma_2022")  # has stop-codon rows: always dropped and listed
    assert assay.wild_type == "DAEFRHDSGYEVHHQKLVFFAEDVGSNKGAIIGLMVGGVVIA"
    assert len(assay) + len(assay.dropped) == 16066
    assert set(assay.dropped.reason) == {STOP}


@pytest.mark.parametrize("rows, fasta, message", [
    (GOOD + [("A4", 0.0)], False, "line 7, mutant 'A4': malformed mutant"),
    (GOOD + [("B4C", 0.0)], False, "malformed mutant"),
    (GOOD + [("K2E:K2D", 0.0)], False, "mutated twice"),
    (GOOD + [("T3A", float("nan"))], False, "line 7, mutant 'T3A': DMS_score is missing"),
    (GOOD + [("Y5F:A4G", 0.0)], False, "duplicate of line 5"),
    (GOOD + [("M1A", 0.3)], False, "duplicate of line 2"),
    (GOOD + [("Q9A", 0.0, _mutate(WT, "Q9A")[:-1])], False, "mutated_sequence length is not 10"),
    (GOOD + [("Q9A", 0.0, _mutate(WT, "Q9C"))], False, "mutated_sequence differs"),
    (GOOD + [("W9A", 0.0, _mutate(WT, "Q9A"))], True, "wild type at 9 is Q (FASTA), not W"),
    (GOOD + [("K11A", 0.0, WT)], True, "position beyond the wild type"),
])
def test_invalid_rows_raise_one_line(tmp_path, rows, fasta, message):
    path = _write(tmp_path, rows)
    with pytest.raises(ValueError) as err:
        load_dms(path, wt_fasta=_fasta(tmp_path) if fasta else None)
    text = str(err.value)
    assert message in text and "\n" not in text and "drop_invalid=True" in text


def test_wrong_fasta_and_inconsistent_rows(tmp_path):
    with pytest.raises(ValueError, match=r"line 2, .*wild type at 1 is G \(FASTA\), not M"):
        load_dms(_write(tmp_path, GOOD), wt_fasta=_fasta(tmp_path, "G" + WT[1:]))
    # one row whose mutant names the wrong wild-type residue: the inferred consensus exposes it
    rows = GOOD + [("W9A", 0.0, _mutate(WT, "Q9A"))]
    with pytest.raises(ValueError, match=r"wild type at 9 is Q \(inferred\), not W"):
        load_dms(_write(tmp_path, rows))


@pytest.mark.parametrize("sep, space, bom", [(";", "", ""), ("\t", "", ""), (",", " ", ""),
                                             (";", " ", "\ufeff")])
def test_semicolon_tab_spaces_and_bom_tables_read(tmp_path, sep, space, bom):
    rows = [f"{m}{space}{sep}{space}{_mutate(WT, m)}{space}{sep}{space}{s}" for m, s in GOOD]
    text = bom + f"mutant{space}{sep}{space}mutated_sequence{space}{sep}{space}DMS_score\n"
    (tmp_path / "odd.csv").write_text(text + "\n".join(rows) + "\n", encoding="utf-8")
    assay = load_dms(tmp_path / "odd.csv")
    assert len(assay) == 5 and assay.wild_type == WT
    assert assay.table.DMS_score.tolist() == [s for _, s in GOOD]


def test_missing_columns_and_unreadable(tmp_path):
    (tmp_path / "bad.csv").write_text("variant,score\nA1C,0.5\n")
    with pytest.raises(ValueError, match=r"missing column.*found: variant, score"):
        load_dms(tmp_path / "bad.csv")
    (tmp_path / "bad.csv.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="cannot read as CSV"):
        load_dms(tmp_path / "bad.csv.gz")
    with pytest.raises(FileNotFoundError, match="no such DMS file"):
        load_dms(tmp_path / "absent.csv")


def test_drop_invalid_reports_rows(tmp_path):
    rows = GOOD + [("A4", 0.0), ("T3A", float("nan")), ("M1A", 0.3)]
    assay = load_dms(_write(tmp_path, rows), drop_invalid=True)
    assert len(assay) == 5 and assay.wild_type == WT
    assert list(assay.dropped.line) == [7, 8, 9]
    assert [r.split(" (")[0].split(":")[0] for r in assay.dropped.reason] == [
        "malformed mutant", "DMS_score is missing or not a number", "duplicate of line 2"]


def test_subsample_is_seeded(tmp_path):
    assay = load_dms(_write(tmp_path, GOOD))
    a, b, c = (assay.subsample(3, seed=s) for s in (0, 0, 1))
    assert len(a) == 3 and a.n_total == 5
    assert list(a.table.mutant) == list(b.table.mutant)
    assert assay.subsample(None) is assay and assay.subsample(10) is assay
    assert len({tuple(x.table.mutant) for x in (a, c, assay.subsample(3, seed=2))}) > 1


# ------------------------------------------------------------------------ metrics
def test_spearman_and_ndcg_by_hand():
    # d = (1, -1, 1, -1, 0): rho = 1 - 6 * 4 / (5 * 24) = 0.8
    assert fitness.spearman([2, 1, 4, 3, 5], [1, 2, 3, 4, 5]) == pytest.approx(0.8)
    assert math.isnan(fitness.spearman([1, 2, 3], [5, 5, 5]))
    # top 50 % of 4 variants -> k = 2; gains = (0, 1/3, 2/3, 1)
    assert fitness.ndcg([0, 1, 2, 3], [0, 1, 2, 3], top=0.5) == pytest.approx(1.0)
    # reversed: predicted top-2 are gains 0 (rank 1) and 1/3 (rank 2)
    # DCG = (1/3)/log2(3); IDCG = 1/log2(2) + (2/3)/log2(3)
    expected = (1 / 3) / math.log2(3) / (1 + (2 / 3) / math.log2(3))
    assert fitness.ndcg([0, 1, 2, 3], [3, 2, 1, 0], top=0.5) == pytest.approx(expected)
    assert expected == pytest.approx(0.1480, abs=1e-4)
    # default top 10 %: k = floor(20 * 0.1) = 2; only the best variant predicted in the top 2
    y = np.arange(20.0)
    pred = -y.copy()
    pred[19] = 100
    ideal = 1 + (18 / 19) / math.log2(3)
    assert fitness.ndcg(y, pred) == pytest.approx(1 / ideal)
    assert fitness.ndcg(y, y) == pytest.approx(1.0)


def test_bootstrap_is_seeded_and_brackets_estimate():
    rng = np.random.default_rng(0)
    y = rng.normal(size=300)
    before, after = y + rng.normal(scale=2, size=300), y + rng.normal(scale=1, size=300)
    a = fitness.bootstrap_spearman(y, before, after, n_boot=400, seed=3)
    b = fitness.bootstrap_spearman(y, before, after, n_boot=400, seed=3)
    c = fitness.bootstrap_spearman(y, before, after, n_boot=400, seed=4)
    assert a == b and a != c
    for (lo, hi), pred in zip(a["ci"], (before, after)):
        assert lo < fitness.spearman(y, pred) < hi and hi - lo < 0.3
    lo, hi = a["delta_ci"]
    assert lo < fitness.spearman(y, after) - fitness.spearman(y, before) < hi and lo > 0


def test_blosum62_baseline():
    # BLOSUM62: A-A 4, W-W 11, A-W -3, D-E 2; a double is the sum of its substitutions
    assert list(fitness.blosum62_scores(["A1W", "D2E", "A1W:D2E"])) == [-3, 2, -1]
    gb1 = load_dms("SPG1_STRSG_Olson_2014_singles")  # positive, as PROVENANCE.md reports (0.17)
    rho = fitness.spearman(gb1.table.DMS_score, fitness.blosum62_scores(gb1.table.mutant))
    assert rho == pytest.approx(0.17, abs=0.01)


def test_unigram_baseline_is_the_composition_log_ratio():
    log_probs = {"A": math.log(0.5), "W": math.log(0.1), "D": math.log(0.2), "E": math.log(0.2)}
    scores = fitness.unigram_scores(["A1W", "D2E", "A1W:D2E"], log_probs)
    assert scores == pytest.approx([math.log(0.2), 0.0, math.log(0.2)])


def test_describe_gains_counts_intervals():
    table = pd.DataFrame({"pseudo_perplexity_before": [5.0, 10.0, 15.0, 20.0],
                          "delta_spearman": [-0.02, 0.0, 0.03, 0.05],
                          "delta_spearman_ci_lo": [-0.04, -0.01, 0.01, 0.02],
                          "delta_spearman_ci_hi": [-0.01, 0.01, 0.05, 0.08]})
    text = fitness.describe_gains(table)
    assert text.startswith("TTT raised Spearman on 2 of 4 assays, lowered it on 1, and made no "
                           "detectable difference (95 % interval includes 0) on 1")
    assert text.endswith("Spearman(perplexity before, change) = 1.00.")


# ------------------------------------------------------------------------ scoring
def test_evaluate_assay_is_pure_and_complete(tmp_path, tiny):
    model, _ = tiny
    from tttlab.engine.ttt import snapshot

    state = snapshot(model)
    out = fitness.evaluate_assay(model, _write(tmp_path, GOOD), cfg=fitness_cfg(2),
                                 progress=False)
    for key in ("assay", "n_variants", "spearman_before", "spearman_after",
                "pseudo_perplexity_before", "pseudo_perplexity_after", "seconds",
                "spearman_before_ci", "delta_spearman_ci", "ndcg_before", "ndcg_after"):
        assert key in out
    assert out["n_variants"] == 5 and set(out["per_order"]) == {"1", "2"}
    assert out["per_order"]["2"]["n"] == 1 and out["pseudo_perplexity_after"] > 0
    assert "spearman_blosum62" in out
    assert all(torch.equal(v, state[k]) for k, v in snapshot(model).items())
    json.dumps(out)


def fitness_cfg(steps):
    from tttlab import preset

    return preset(steps=steps, grad_accum_steps=1, batch_size=2)


def test_shared_wild_type_trains_once(tmp_path, tiny):
    model, _ = tiny
    singles = load_dms(_write(tmp_path, GOOD[:3], "singles.csv"))
    doubles = load_dms(_write(tmp_path, [("M1A:K2E", 0.1), ("T3S:R10K", 0.4),
                                         ("A4G:Y5F", -0.3)], "doubles.csv"))
    runs = fitness.score_assays(model, [singles, doubles], fitness_cfg(1), progress=False)
    assert [r.assay for r in runs] == ["singles", "doubles"]
    assert runs[0].history is runs[1].history and runs[0].marginals_after.shape == (10, 20)
    # masked-marginal scores are additive: the double M1A:K2E is the sum of M1A and K2E
    s, d = runs[0].variants.set_index("mutant"), runs[1].variants.set_index("mutant")
    assert d.score_after["M1A:K2E"] == pytest.approx(s.score_after["M1A"] + s.score_after["K2E"])
    table = fitness.results_table(runs, n_boot=50)
    assert list(table.assay) == ["singles", "doubles"] and table.doubles_n.tolist()[1] == 3


# ---------------------------------------------------------------------------- CLI
def test_cli_json(tmp_path, tiny, capsys):
    from tttlab.engine.models import save_fair_esm_checkpoint

    model_path = tmp_path / "esm2_tiny.pt"
    save_fair_esm_checkpoint(tiny[0], model_path)
    path = _write(tmp_path, GOOD)
    code = cli.main(["fitness", "--dms", str(path), "--model", str(model_path), "--ttt-steps",
                     "1", "--max-variants", "4", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["n_variants"] == 4 and out["n_variants_total"] == 5
    for key in ("assay", "n_variants", "spearman_before", "spearman_after",
                "pseudo_perplexity_before", "pseudo_perplexity_after", "seconds"):
        assert key in out


def test_cli_errors_are_one_line(tmp_path, capsys):
    path = _write(tmp_path, GOOD + [("A4", 0.0)])
    assert cli.main(["fitness", "--dms", str(path), "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tttlab: error: toy: line 7") and "\n" not in err
    assert cli.main(["fitness", "--dms", str(tmp_path / "nope.csv")]) == 2
    assert "no such DMS file" in capsys.readouterr().err


# --------------------------------------------------------------------- plots, widget
def test_plots_and_explorer(tmp_path, tiny):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tttlab.present import plots

    from tttlab.present import widgets

    model, _ = tiny
    assay = load_dms(_write(tmp_path, GOOD))
    run = fitness.score_assays(model, [assay], fitness_cfg(1), progress=False)[0]
    ax = plots.fitness_scatter(run.variants, "score_before")
    assert ax.get_title().startswith("Spearman ")
    fig = plots.fitness_figure(run.variants, run.marginals_before, run.marginals_after,
                               run.wild_type, title="toy")
    assert len(fig.axes) >= 5
    table = fitness.results_table([run, run, run], n_boot=20)
    table["pseudo_perplexity_before"] += [0.0, 1.0, 2.0]
    table["delta_spearman"] += [0.0, 0.1, 0.3]
    ax = plots.delta_spearman_plot(table)
    assert ax.get_xlabel() == "pseudo-perplexity before TTT" and len(ax.texts) == 3
    widget = widgets.fitness_explorer(model, [assay], steps=1)
    widget.update()  # what the Run button does
    assert widget.result["assay"] == "toy" and widget.result["ttt_steps"] == 1
    plt.close("all")


def test_registered_but_missing_assay_says_how_to_get_it(monkeypatch, tmp_path):
    from tttlab.data import registry as data
    from tttlab.data.dms import assay_path

    monkeypatch.setenv("TTTLAB_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(data, "shared_dir", lambda: tmp_path / "no-shared")
    monkeypatch.setattr(data, "cache_dir", lambda: tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="tttlab data prepare"):
        assay_path("BLAT_ECOLX_Stiffler_2015")
    with pytest.raises(FileNotFoundError, match="no such DMS file or shared assay"):
        assay_path("NOT_AN_ASSAY")
