"""Tests for the quickstart / your-protein helpers: input checking (tttlab.studies.yourprotein), the
mutational scan (scoring), the heat-map figures (plots, quickstart section) and the notebook
helpers (widgets, your-protein section)."""

import gzip
import re

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from tttlab.engine.config import preset  # noqa: E402
from tttlab.engine import scoring  # noqa: E402
from tttlab.present import plots, widgets  # noqa: E402
from tttlab.studies import yourprotein  # noqa: E402
from tttlab.data import path  # noqa: E402
from tttlab.common.sequences import STANDARD_AA  # noqa: E402

GB1_FASTA = "dms/SPG1_STRSG_Olson_2014_singles.wt.fasta"
GB1_DMS = "dms/SPG1_STRSG_Olson_2014_singles.csv.gz"
GB1_PDB = "structures/dms_targets/1PGA.pdb"
UBQ_PDB = "structures/dms_targets/1UBQ.pdb"
SEQ = "MKTAYIAKQRQISFVKSHFSRQ"


# ------------------------------------------------------------------- yourprotein inputs
def test_read_protein_plain_fasta_text_and_file(tmp_path):
    assert yourprotein.read_protein("mkt ay\nia") == ("my_protein", "MKTAYIA")
    assert yourprotein.read_protein(">p1 some text\nMKT\nAYI\n") == ("p1", "MKTAYI")
    f = tmp_path / "x.fasta.gz"
    with gzip.open(f, "wt") as handle:
        handle.write(">zz\nMKV\n")
    assert yourprotein.read_protein(None, f) == ("zz", "MKV")
    # a pasted sequence wins over a FASTA file
    assert yourprotein.read_protein("AAA", f) == ("my_protein", "AAA")


@pytest.mark.parametrize("kwargs, message", [
    ({}, "no protein given"),
    ({"sequence": "   "}, "no protein given"),
    ({"sequence": "MKV1ZB"}, "letters outside the 20 standard amino acids and X: 1BZ"),
    ({"sequence": ">a\nMK\n>b\nMV\n"}, "expected one FASTA record, found 2"),
    ({"sequence": ">a\n"}, "empty sequence"),
    ({"fasta": "/no/such/file.fasta"}, "FASTA file not found"),
    ({"sequence": "MKV", "pdb": "/no/such.pdb"}, "PDB file not found"),
    ({"sequence": "MKV", "dms_csv": "/no/such.csv"}, "DMS CSV not found"),
])
def test_validate_inputs_one_line_messages(kwargs, message):
    text = yourprotein.validate_inputs(**kwargs)
    assert message in text
    assert "\n" not in text
    with pytest.raises(ValueError, match="."):
        yourprotein.load_inputs(**kwargs)


def test_shared_gb1_inputs_check_out():
    seq_path, dms, pdb = path(GB1_FASTA), path(GB1_DMS), path(GB1_PDB)
    assert yourprotein.validate_inputs(fasta=seq_path, dms_csv=dms, pdb=pdb) == ""
    inputs = yourprotein.load_inputs(fasta=seq_path, dms_csv=dms, pdb=pdb, name="GB1")
    assert inputs.name == "GB1" and len(inputs.sequence) == 55
    assert len(inputs.dms) == 1045 and inputs.structure.source == "1PGA.pdb:A"
    assert inputs.dms.wild_type == inputs.sequence
    lines = inputs.summary().splitlines()
    assert len(lines) == 3 and "55 residues" in lines[0] and "1045 variants" in lines[1]
    assert "1PGA.pdb chain A: 55 of 55 residues placed, 98 % identical" in lines[2]
    bare = yourprotein.load_inputs(sequence=inputs.sequence)
    assert bare.dms is None and bare.structure is None and "none" in bare.summary()


def test_dms_check_catches_wrong_sequence_and_columns(tmp_path):
    wrong = yourprotein.validate_inputs(sequence="A" * 60, dms_csv=path(GB1_DMS))
    assert re.search(r"line \d+, mutant 'Q1\w': wild type at 1 is A \(FASTA\), not Q", wrong)
    assert "\n" not in wrong
    bad = tmp_path / "bad.csv"
    bad.write_text("variant,score\nA1C,0.5\n")
    assert "missing column(s) mutant, DMS_score" in yourprotein.validate_inputs(
        sequence="AK", dms_csv=bad)
    good = tmp_path / "good.csv"
    good.write_text("mutant,DMS_score\nA1C,0.5\nK2E:A1D,-1\nK2*,-3\n")
    inputs = yourprotein.load_inputs(sequence="AK", dms_csv=good)
    assert len(inputs.dms) == 2 and inputs.dms.wild_type == "AK"
    assert "good: 2 variants (1 stop-codon rows dropped)" in inputs.summary()


def test_structure_target_chain_garbage_and_wrong_protein(tmp_path):
    seq = yourprotein.read_protein(None, path(GB1_FASTA))[1]
    assert "no protein chain 'B'" in yourprotein.validate_inputs(
        sequence=seq, pdb=path(GB1_PDB), chain="B")
    junk = tmp_path / "junk.pdb"
    junk.write_text("this is not a PDB file\n")
    message = yourprotein.validate_inputs(sequence=seq, pdb=junk)
    assert "junk.pdb" in message and "\n" not in message
    wrong = yourprotein.validate_inputs(sequence=seq, pdb=path(UBQ_PDB))
    assert "1UBQ.pdb chain A does not match the sequence" in wrong


def test_structure_target_agrees_with_the_dms_structure_map():
    """Aligning GB1's wild type to 1PGA gives the same geometry as the curated map."""
    from tttlab.data.structures import dms_target

    seq = yourprotein.read_protein(None, path(GB1_FASTA))[1]
    mine = yourprotein.structure_target(seq, path(GB1_PDB))
    curated = dms_target("SPG1_STRSG_Olson_2014_singles")
    assert mine.sequence == curated.sequence and mine.source == curated.source
    np.testing.assert_array_equal(mine.contacts(), curated.contacts())
    assert mine.identity == pytest.approx(54 / 55)


# ------------------------------------------------------------------ scoring: the scan
def test_substitution_scores_and_scan_table():
    rng = np.random.default_rng(0)
    seq = "MKXA"
    marg = np.log(rng.dirichlet(np.ones(20), size=len(seq)))
    scores = scoring.substitution_scores(marg, seq)
    assert scores.shape == (4, 20)
    assert scores[0, STANDARD_AA.index("M")] == 0 and np.isnan(scores[2]).all()
    j = STANDARD_AA.index("C")
    assert scores[1, j] == pytest.approx(marg[1, j] - marg[1, STANDARD_AA.index("K")])
    table = scoring.mutational_scan_table(marg, seq)
    assert len(table) == 3 * 19  # X skipped, wild type skipped
    assert list(table.columns) == ["mutant", "position", "wt", "mt", "score"]
    assert table["mutant"].iloc[0] == "M1A" and set(table["position"]) == {1, 2, 4}
    assert (table["wt"] != table["mt"]).all()
    row = table.set_index("mutant").loc["K2C"]
    assert row["score"] == pytest.approx(scores[1, j])
    with pytest.raises(ValueError, match="does not match"):
        scoring.substitution_scores(marg[:3], seq)
    other = np.log(rng.dirichlet(np.ones(20), size=len(seq)))
    both = scoring.mutational_scan_table(marg, seq, before=other)
    np.testing.assert_allclose(both["score_before"],
                               scoring.mutational_scan_table(other, seq)["score"])
    np.testing.assert_allclose(both["change"], both["score"] - both["score_before"])


def test_scan_table_agrees_with_score_mutants(tiny):
    model, _ = tiny
    marg = scoring.masked_marginals(model, SEQ)
    table = scoring.mutational_scan_table(marg, SEQ)
    assert len(table) == 19 * len(SEQ)
    some = table["mutant"].iloc[::37].tolist()
    expected = scoring.score_mutants(model, SEQ, some, marginals=marg)
    np.testing.assert_allclose(table.set_index("mutant").loc[some, "score"], expected, rtol=1e-6)


# -------------------------------------------------------------------------- plots
def test_marginals_heatmap_and_summary_figure():
    import pandas as pd

    rng = np.random.default_rng(1)
    marg = np.log(rng.dirichlet(np.ones(20), size=len(SEQ)))
    before = scoring.substitution_scores(marg, SEQ)
    ax = plots.marginals_heatmap(before, SEQ, title="before")
    image = ax.images[0]
    lo, hi = image.get_clim()
    assert lo == pytest.approx(-hi) and image.get_array().shape == (20, len(SEQ))
    assert ax.get_title() == "before"
    ax2 = plots.marginals_heatmap(before, SEQ, center=None, robust=False)
    assert ax2.images[0].get_clim() == pytest.approx((np.nanmin(before), np.nanmax(before)))
    with pytest.raises(ValueError, match="does not match"):
        plots.marginals_heatmap(before[:-1], SEQ)
    history = pd.DataFrame([{"step": 0, "loss": None, "pseudo_perplexity": 9.0},
                            {"step": 1, "loss": 2.0, "pseudo_perplexity": 8.0}])
    fig = plots.ttt_summary_figure(history, before, before + 1, SEQ, title="t")
    assert len(fig.axes) == 2 + 3 + 3  # two curves, three heat maps, three colour bars
    # a history without pseudo-perplexity still draws (a note instead of the curve)
    fig2 = plots.ttt_summary_figure(history.drop(columns="pseudo_perplexity"), before, before, SEQ)
    assert any("no pseudo perplexity" in t.get_text() for t in fig2.axes[1].texts)
    matplotlib.pyplot.close("all")


# ------------------------------------------------------------------------- widgets
def test_explorer_runs_and_restores_model(mini):
    import torch

    model, _ = mini  # a trained model: TTT must lower its pseudo-perplexity
    state = {k: v.clone() for k, v in model.state_dict().items()}
    # 8 steps: at the preset's rate the first steps overshoot on this 22-residue peptide (16.9 ->
    # 4.6e8 -> 27.5 -> 19.0 -> 14.6 ... 12.2 after 7 steps; see the model card's known limits)
    ui = widgets.your_protein_explorer(model, SEQ, steps=8, eval_every=4)
    steps, lr, method = ui.children[:3]
    assert (steps.value, method.value) == (8, "all")
    assert lr.value == pytest.approx(preset("tttlab-mini").lr)  # the model's preset by default
    ui.update()
    result = ui.result
    assert result["pseudo_perplexity_after"] < result["pseudo_perplexity_before"]
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    matplotlib.pyplot.close("all")


def test_short_errors_outside_and_inside_ipython(capsys):
    assert widgets.short_errors() is False  # plain Python: nothing to install
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        assert widgets.short_errors() is True
        shell.run_cell("import tttlab.studies.yourprotein as yp\nyp.load_inputs(sequence='MK1')")
        out = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)
        assert out.count("\n") == 1
        assert "ValueError: sequence: letters outside the 20 standard amino acids and X: 1" in out
        assert "Traceback" not in out and "load_inputs" not in out
        result = shell.run_cell("raise ValueError('user code')")  # not from tttlab: full traceback
        assert not result.success
        assert "Traceback" in capsys.readouterr().out
        assert widgets.short_errors(False) is True
    finally:
        InteractiveShell.clear_instance()


def test_an_unrelated_structure_is_refused_even_at_high_identity():
    """1UCS and 3FYM are unrelated, yet with free end gaps 11 of their 18 aligned residues are
    identical (61 %, over the 30 % bar): the z-score against shuffled chains refuses the pair,
    while a true pair (ubiquitin on 1UBQ) scores far above the bar."""
    from tttlab.data.structures import alignment_zscore

    seq = chain_sequence("structures/pfam40/3FYM_A.pdb")
    message = yourprotein.validate_inputs(sequence=seq, pdb=path("structures/pfam40/1UCS_A.pdb"))
    assert "no better than chance" in message and "\n" not in message
    ubq = yourprotein.read_protein(None, path("dms/RL40A_YEAST_Roscoe_2013.wt.fasta"))[1]
    assert alignment_zscore(ubq, chain_sequence(UBQ_PDB)) > 40
    assert yourprotein.structure_target(ubq, path(UBQ_PDB)).identity > 0.95


def chain_sequence(relpath):
    """One-letter sequence of the first protein chain of a shared structure file."""
    from tttlab.data.structures import chain_residues, read_chain

    atoms, _ = read_chain(path(relpath), None)
    return "".join(r["letter"] for r in chain_residues(atoms))
