"""Structure case study: true contacts from real PDB files, the contact head (features, fit,
fair-esm round trip), precision metrics, the secondary-structure probe, ``tttlab contacts``."""

import json

import numpy as np
import pytest
import torch

from tttlab.present import plots
from tttlab.studies import structure
from tttlab.data import structures as targets
from tttlab.studies.contact_head import contact_features, fit_contact_head, fit_head_command
from tttlab.engine.models import build_esm2, load_model, save_fair_esm_checkpoint
from tttlab.engine.ttt import snapshot

SEQ = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAE"


# ------------------------------------------------------------------------------ true contacts
def test_true_contacts_real_pdb():
    t = targets.read_pdb_target(targets.pfam40_path("2O9S_A"))
    assert t.length == 67 and len(t.residues) == 67 and t.coords.shape == (67, 3)
    assert (t.residues[0], t.residues[-1]) == ("818", "884")  # PDB numbering kept per position
    c = t.contacts()
    assert np.array_equal(c, c.T, equal_nan=True) and np.all(np.diag(c) == 1)
    # C-beta for every residue but glycine, C-alpha for glycine
    atoms = t.atoms
    for k, (letter, label) in enumerate(zip(t.sequence, t.residues)):
        res = atoms[atoms.res_id == int(label)]
        want = "CA" if letter == "G" else "CB"
        assert np.allclose(t.coords[k], res.coord[res.atom_name == want][0])
    assert "G" in t.sequence
    # the 8 A rule, checked on raw distances
    d = np.linalg.norm(t.coords[:, None] - t.coords[None], axis=-1)
    assert np.array_equal(c == 1, d < 8.0)


def test_chain_break_numbering_jump_and_missing_atoms():
    gap = targets.read_pdb_target(targets.pfam40_path("3GQS_A"))  # residue 12 missing
    k = gap.residues.index("11")
    assert gap.residues[k + 1] == "" and gap.sequence[k + 1] == "X"
    assert gap.residues[k + 2] == "13" and np.isnan(gap.contacts()[k + 1]).all()
    jump = targets.read_pdb_target(targets.pfam40_path("3F04_A"))  # 17 -> 140, chain continuous
    assert "X" not in jump.sequence and jump.length == 136
    partial = targets.read_pdb_target(targets.pfam40_path("1UNQ_A"))  # last residue lacks CA/CB
    assert np.isnan(partial.coords[-1]).all() and partial.sequence[-1] == "E"


def test_insertion_codes_are_separate_positions(tmp_path):
    import biotite.structure.io.pdb as pdb

    ref = targets.read_pdb_target(targets.pfam40_path("2O9S_A"))
    atoms = ref.atoms.copy()
    # renumber residues 821 and 822 as 820A and 820B (as antibody-style numbering does)
    for old, ins in ((821, "A"), (822, "B")):
        sel = atoms.res_id == old
        atoms.res_id[sel], atoms.ins_code[sel] = 820, ins
    out = pdb.PDBFile()
    out.set_structure(atoms)
    out.write(tmp_path / "ins.pdb")
    t = targets.read_pdb_target(tmp_path / "ins.pdb")
    assert t.sequence == ref.sequence and np.allclose(t.coords, ref.coords)
    assert t.residues[2:5] == ["820", "820A", "820B"]


def test_c_alpha_only_chain_gives_c_alpha_contacts_with_a_warning(tmp_path):
    import biotite.structure.io.pdb as pdb

    ref = targets.read_pdb_target(targets.pfam40_path("2O9S_A"))
    out = pdb.PDBFile()
    out.set_structure(ref.atoms[ref.atoms.atom_name == "CA"])
    out.write(tmp_path / "ca.pdb")
    with pytest.warns(UserWarning, match="no C-beta atoms"):
        t = targets.read_pdb_target(tmp_path / "ca.pdb")
    assert t.sequence == ref.sequence and np.isfinite(t.coords).all()
    ca = np.array([r.coord[r.atom_name == "CA"][0] for r in
                   (ref.atoms[ref.atoms.res_id == int(label)] for label in ref.residues)])
    assert np.allclose(t.coords, ca)


def test_hydrogens_and_nmr_models_are_dropped():
    sumo = targets.dms_target("SUMO1_HUMAN_Weile_2017")  # NMR model with hydrogens
    assert not np.isin(sumo.atoms.element, ("H", "D")).any()
    if1 = targets.dms_target("IF1_ECOLI_Kelsic_2016")  # 19-model NMR ensemble: first model only
    assert len(set(if1.atoms.res_id.tolist())) == if1.atoms.res_id.max()
    assert if1.atoms.array_length() < 1000  # one model's heavy atoms, not 19


def test_dms_targets_follow_the_structure_map():
    gb1 = targets.dms_target("SPG1_STRSG_Olson_2014_singles")
    assert gb1.length == 55 and gb1.residues[0] == "2" and gb1.residues[-1] == "56"
    assert gb1.identity == pytest.approx(54 / 55)  # Q1 is T2 in the crystal (listed)
    if1 = targets.dms_target("IF1_ECOLI_Kelsic_2016")  # wt 2-72 = residues 1-71
    assert if1.residues[0] == "" and np.isnan(if1.coords[0]).all() and if1.residues[1] == "1"
    pabp = targets.dms_target("PABP_YEAST_Melamed_2013")  # homolog: aligned, not offset
    assert pabp.identity == pytest.approx(1 - 25 / 74)


def test_unlisted_mismatch_is_an_error(monkeypatch):
    row = targets._dms_row("SPG1_STRSG_Olson_2014_singles").copy()
    row["mismatches"] = float("nan")  # pretend the map lists no mismatch
    monkeypatch.setattr(targets, "_dms_row", lambda _: row)
    with pytest.raises(ValueError, match="differs from"):
        targets.dms_target("SPG1_STRSG_Olson_2014_singles")


def test_missing_chain_and_unreadable_file(tmp_path):
    with pytest.raises(ValueError, match=r"no protein chain 'B' \(chains: A\)"):
        targets.read_pdb_target(targets.pfam40_path("2O9S_A"), chain="B")
    bad = tmp_path / "bad.pdb"
    bad.write_bytes(b"\x91\x00 not a pdb")
    with pytest.raises(ValueError, match="cannot read bad.pdb"):
        targets.read_pdb_target(bad)
    with pytest.raises(FileNotFoundError):
        targets.read_pdb_target(tmp_path / "missing.pdb")


# ------------------------------------------------------------------------------------ metrics
def _toy():
    true = np.zeros((30, 30))
    for i, j in ((0, 25), (1, 29), (2, 28), (0, 15)):
        true[i, j] = true[j, i] = 1
    true[3, 27] = true[27, 3] = np.nan  # unknown: never counted
    pred = np.zeros((30, 30))
    for (i, j), p in {(3, 27): 0.95, (0, 25): 0.9, (4, 29): 0.8, (1, 29): 0.7,
                      (0, 15): 0.99}.items():
        pred[i, j] = pred[j, i] = p
    return true, pred


def test_precision_at_hand_computed():
    true, pred = _toy()
    # long range (j - i >= 24): (3,27) unknown -> skipped, (0,25) hit, (4,29) miss, (1,29) hit
    assert structure.precision_at(pred, true, 1) == 1.0
    assert structure.precision_at(pred, true, 2) == 0.5
    assert structure.precision_at(pred, true, 3) == pytest.approx(2 / 3)
    # medium range (12-23): (0,15) is the top pair and a contact
    assert structure.precision_at(pred, true, 1, min_sep=12, max_sep=23) == 1.0
    assert np.isnan(structure.precision_at(pred[:5, :5], true[:5, :5], 1))  # no long-range pair
    keys = structure.contact_precisions(pred, true)
    assert set(keys) == {f"precision_at_{t}_{r}" for t in ("L", "L2", "L5")
                         for r in ("long", "medium")}
    assert keys["precision_at_L5_long"] == pytest.approx(2 / 6)  # L // 5 = 6 pairs, 2 contacts
    top = structure.top_contacts(pred, true, top=3, min_sep=12)
    assert list(zip(top.i, top.j)) == [(0, 15), (3, 27), (0, 25)]


# --------------------------------------------------------------------------- contact head
def test_features_are_symmetric_apc_corrected_attention(tiny):
    model, _ = tiny
    feats = contact_features(model, SEQ)
    L, C = len(SEQ), model.num_layers * model.attention_heads
    assert feats.shape == (L, L, C)
    assert np.allclose(feats, feats.transpose(1, 0, 2), atol=1e-6)
    with torch.no_grad():
        attn = model(structure.tokens_for(model, SEQ), need_head_weights=True)["attentions"]
    a = attn[0, :, :, 1:-1, 1:-1].flatten(0, 1).double().numpy()
    s = a + a.transpose(0, 2, 1)
    apc = s - s.sum(-1, keepdims=True) * s.sum(-2, keepdims=True) / s.sum((-1, -2), keepdims=True)
    assert np.allclose(feats, apc.transpose(1, 2, 0), atol=1e-5)
    # the stock head is a logistic regression on exactly these features
    w = model.contact_head.regression.weight.detach().double().numpy()[0]
    b = float(model.contact_head.regression.bias.detach())
    assert np.allclose(structure.predict_contacts(model, SEQ), 1 / (1 + np.exp(-(feats @ w + b))),
                       atol=1e-5)


def test_fast_attention_gives_the_stock_contacts():
    fast, _ = build_esm2(num_layers=2, embed_dim=64, attention_heads=4, seed=3)
    slow, _ = build_esm2(num_layers=2, embed_dim=64, attention_heads=4, seed=3,
                         fast_attention=False)
    assert np.allclose(structure.predict_contacts(fast, SEQ),
                       structure.predict_contacts(slow, SEQ), atol=1e-6)
    with pytest.raises(ValueError, match="backend"):
        structure.predict_contacts(fast, SEQ, backend="alphafold")


def test_fitted_head_round_trips_through_fair_esm(tmp_path):
    model, _ = build_esm2(num_layers=2, embed_dim=64, attention_heads=4, seed=1)
    pt = tmp_path / "esm2_tiny.pt"
    save_fair_esm_checkpoint(model, pt)
    summary = fit_head_command(str(pt), progress=False)
    reg = tmp_path / "esm2_tiny-contact-regression.pt"
    assert summary["path"] == str(reg) and reg.is_file() and summary["max_abs_diff"] < 1e-5
    assert summary["proteins"] == 20 and summary["features"] == 8
    fitted, _ = load_model(pt, device="cpu")
    stored = torch.load(reg, weights_only=True)["model"]
    weight = fitted.contact_head.regression.weight
    assert torch.equal(weight, stored["contact_head.regression.weight"])
    # deterministic: fitting again in memory gives the same weights
    again, _ = load_model(pt, device="cpu")
    fit_contact_head(again, [targets.pfam40_path(n) for n in targets.PFAM40_TRAIN], progress=False)
    assert torch.allclose(again.contact_head.regression.weight, weight)


def test_a_stale_contact_head_of_another_shape_is_one_line_and_fit_head_replaces_it(tmp_path,
                                                                                    capsys):
    from tttlab.cli.main import main

    old, _ = build_esm2(num_layers=1, embed_dim=32, attention_heads=2, seed=0)
    pt = tmp_path / "esm2_tiny.pt"
    save_fair_esm_checkpoint(old, pt)
    fit_head_command(str(pt), progress=False)  # a head with 1 x 2 = 2 attention maps
    new, _ = build_esm2(num_layers=2, embed_dim=64, attention_heads=4, seed=1)
    save_fair_esm_checkpoint(new, pt)  # a retrained model of another shape, same file name
    with pytest.raises(ValueError, match="fitted for a model of another shape"):
        load_model(pt, device="cpu")
    pdb = str(targets.pfam40_path("2O9S_A"))
    assert main(["contacts", "--pdb", pdb, "--model", str(pt)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fit-head --model" in err
    assert fit_head_command(str(pt), progress=False)["features"] == 8
    assert load_model(pt, device="cpu")[0].contact_head.regression.weight.shape == (1, 8)


def test_pfam40_split_is_fixed_and_disjoint():
    split = targets.pfam40_split()
    assert tuple(split["train"]) == targets.PFAM40_TRAIN
    assert tuple(split["test"]) == targets.PFAM40_TEST
    assert len(set(targets.PFAM40_TRAIN) | set(targets.PFAM40_TEST)) == 40
    assert all(targets.pfam40_path(n).is_file() for n in targets.PFAM40_TEST)


# ----------------------------------------------------------------------- before / after TTT
def test_evaluate_structure_restores_the_model(tiny):
    model, _ = tiny
    state = snapshot(model)
    from tttlab.engine.config import preset

    none = structure.evaluate_structure(model, targets.pfam40_path("2O9S_A"),
                                        cfg=preset(steps=0), progress=False)
    assert none["precision_at_L_long_after"] == none["precision_at_L_long_before"]
    row = structure.evaluate_structure(model, "SPG1_STRSG_Olson_2014_singles",
                                       cfg=preset(steps=1, grad_accum_steps=1), progress=False)
    for key in ("id", "length", "precision_at_L_long_before", "precision_at_L_long_after",
                "precision_at_L5_medium_after", "max_probability_change", "seconds"):
        assert key in row
    assert row["length"] == 55 and 0 <= row["precision_at_L_long_after"] <= 1
    assert all(torch.equal(v, state[k]) for k, v in snapshot(model).items())


def test_secondary_structure_probe(tiny):
    model, _ = tiny
    train = structure.secondary_structure_chains("train", n=6, max_length=120)
    test = structure.secondary_structure_chains("test", n=2, max_length=80)
    assert len(train) == 6 and len(test) == 2
    assert all(len(s) == len(lab) <= 120 and set(lab) <= set("HEC") for _, s, lab in train)
    assert not {n for n, _, _ in train} & {n for n, _, _ in test}
    probe = structure.fit_ss_probe(model, train)
    from tttlab.engine.config import preset

    table = structure.evaluate_ss_probe(model, probe, test, preset(steps=1, grad_accum_steps=1),
                                        progress=False)
    assert list(table.columns) == ["id", "length", "q3_before", "q3_after", "seconds"]
    assert table[["q3_before", "q3_after"]].apply(lambda c: c.between(0, 1)).all().all()


# -------------------------------------------------------------------------------------- CLI
def test_cli_json(tmp_path, capsys):
    from tttlab.cli.main import main

    model, _ = build_esm2(num_layers=2, embed_dim=64, attention_heads=4, seed=2)
    pt = tmp_path / "esm2_cli.pt"
    save_fair_esm_checkpoint(model, pt)
    pdb = str(targets.pfam40_path("2O9S_A"))
    assert main(["contacts", "--pdb", pdb, "--model", str(pt)]) == 2  # no contact head yet
    assert "fit-head" in capsys.readouterr().err
    fit_head_command(str(pt), progress=False)
    assert main(["contacts", "--pdb", pdb, "--model", str(pt), "--ttt-steps", "0", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert row["id"] == "2O9S_A" and row["length"] == 67
    assert row["precision_at_L_long_before"] == row["precision_at_L_long_after"]


@pytest.mark.parametrize("args, message", [
    (["--chain", "Q"], "no protein chain 'Q'"),
    (["--pdb-bad"], "cannot read"),
    (["--missing"], "not found"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, args, message):
    from tttlab.cli.main import main

    pdb = str(targets.pfam40_path("2O9S_A"))
    if args == ["--pdb-bad"]:
        pdb, args = str(tmp_path / "bad.pdb"), []
        (tmp_path / "bad.pdb").write_text("HELLO\n")
    elif args == ["--missing"]:
        pdb, args = str(tmp_path / "nope.pdb"), []
    assert main(["contacts", "--pdb", pdb, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tttlab: error:") and message in err and "\n" not in err


# ------------------------------------------------------------------------------------ plots
def test_structure_plots():
    import matplotlib

    matplotlib.use("Agg")
    true, pred = _toy()
    axes = plots.contact_map_pair(np.nan_to_num(true), pred, pred * 0.5, top=5)
    assert len(axes) == 2 and axes[0].get_title() == "before TTT"
    import pandas as pd

    table = pd.DataFrame({"precision_at_L_long_before": [0.1, 0.2],
                          "precision_at_L_long_after": [0.2, 0.2]})
    assert "0.150 -> 0.200" in plots.before_after(table).get_title()
    t = targets.read_pdb_target(targets.pfam40_path("2O9S_A"))
    pairs = structure.top_contacts(t.contacts() * 0.9, t.contacts(), top=10)
    assert plots.contacts_3d(t.coords, pairs) is not None
    view = plots.contacts_view(t.pdb_text(), t.coords, pairs)
    assert view is not None
    assert t.pdb_text().count(" CA ") == 67


def test_attention_maps_strongest_feature_and_summary(tiny):
    from tttlab.studies.contact_head import attention_maps, strongest_feature

    model, _ = tiny
    raw = attention_maps(model, SEQ)
    assert raw.shape == (model.num_layers * model.attention_heads, len(SEQ), len(SEQ))
    best = strongest_feature(model)
    w = model.contact_head.regression.weight.detach()[0]
    assert abs(best["weight"]) == pytest.approx(float(w.abs().max()))
    assert best["layer"] * model.attention_heads + best["head"] == best["index"]
    import pandas as pd

    table = pd.DataFrame({"id": ["a", "b"], "q3_before": [0.5, 0.7], "q3_after": [0.6, 0.7],
                          "seconds": [1.0, 2.0]})
    out = structure.summary(table)
    assert list(out.index) == ["q3"] and out.loc["q3", "change"] == pytest.approx(0.05)
    assert plots.heatmap_row({"raw": raw[0].numpy(), "other": raw[1].numpy()}) is not None


def test_esmfold_backend_reads_the_distogram(monkeypatch):
    """The ESMFold seam without ESMFold: a stand-in whose distogram puts each pair in one bin."""

    class FakeFold:
        esm = build_esm2(num_layers=1, embed_dim=32, attention_heads=2, seed=0)[0].half()

        def infer(self, seq):
            L = len(seq)
            logits = torch.full((1, L, L, 64), -1e4)
            logits[..., 30] = 0.0  # ~11.7 A: no contact
            logits[0, 0, L - 1, 5] = logits[0, L - 1, 0, 5] = 1e4  # ~4 A: contact
            return {"distogram_logits": logits}

    fold = FakeFold()
    pred = structure.predict_contacts(fold, SEQ, backend="esmfold")
    assert pred.shape == (len(SEQ), len(SEQ)) and pred[0, -1] == pytest.approx(1.0)
    assert pred[1, 2] == pytest.approx(0.0, abs=1e-6)
    lm = structure.BACKENDS["esmfold"].language_model(fold)
    assert lm is fold.esm and next(lm.parameters()).dtype == torch.float32
