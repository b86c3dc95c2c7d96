"""ESMFold TTT (engine.folding, studies.folding, ``tttlab fold``) on a small random-weight
transformers EsmForProteinFolding and a matching random EsmForMaskedLM: the structures mean nothing,
the mechanics are real."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tmtools")

from tttlab.cli import main as cli  # noqa: E402
from tttlab.data import registry  # noqa: E402
from tttlab.data.structures import read_chain, read_pdb_target  # noqa: E402
from tttlab.engine import folding  # noqa: E402
from tttlab.engine.config import preset  # noqa: E402
from tttlab.studies.folding import compare_to_reference, fold_with_ttt  # noqa: E402

UBQ = "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG"
UBQ_PDB = "structures/dms_targets/1UBQ.pdb"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A random folding model and a matching masked LM saved with ``save_pretrained``, plus an
    LM of another width."""
    root = tmp_path_factory.mktemp("fold")
    fold, mlm = folding.build_folding_model()
    fold.save_pretrained(root / "fold")
    mlm.save_pretrained(root / "mlm")
    folding.build_folding_model(width=48)[1].save_pretrained(root / "mlm48")
    return root


@pytest.fixture()
def model(saved):
    return folding.load_folding_model(saved / "fold", lm_head=saved / "mlm", device="cpu")


def test_language_model_is_the_transformers_one(saved, model):
    """The fair-esm copy gives ESMFold the same hidden states, so the same structure."""
    from transformers import EsmForProteinFolding, EsmForMaskedLM

    stock = EsmForProteinFolding.from_pretrained(saved / "fold").eval()
    esmaa = stock.af2_idx_to_esm_idx(torch.randint(0, 20, (2, 30)), torch.ones(2, 30))
    with torch.no_grad():
        ref = stock.compute_language_model_representations(esmaa)
        ours = model._representations(esmaa)
        assert ref.shape == ours.shape == (2, 30, 3, 32)
        assert (ref - ours).abs().max() < 1e-5
        a, b = stock.infer(UBQ[:40]), model.trunk.infer(UBQ[:40])
    assert (a["positions"] - b["positions"]).abs().max() < 1e-3
    assert torch.allclose(a["plddt"], b["plddt"], atol=1e-5)
    # the head is the masked LM's: same logits once the LM body is the folding model's
    mlm = EsmForMaskedLM.from_pretrained(saved / "mlm").eval()
    mlm.esm.load_state_dict(stock.esm.state_dict(), strict=False)
    tokens = torch.tensor([[0, 5, 6, 7, 8, 9, 10, 2]])
    with torch.no_grad():
        assert (mlm(tokens).logits - model.language_model(tokens)["logits"]).abs().max() < 1e-4


def test_published_recipe_preset():
    cfg = preset("esmfold_v1")
    assert (cfg.lr, cfg.batch_size, cfg.grad_accum_steps, cfg.steps) == (4e-4, 4, 4, 30)
    assert (cfg.trainable, cfg.lora_rank, cfg.lora_alpha, cfg.lora_init) == ("lora", 8, 256.0,
                                                                             "gaussian")
    assert cfg.loss == "masked_tokens" and cfg.keep_best and cfg.keep_best_by == "plddt"
    assert cfg.keep_best_mode == "max"


def test_only_lora_trains_and_every_weight_comes_back(model):
    before = {k: v.clone() for k, v in model.trunk.state_dict().items()}
    seen = []

    def check(step, lm):  # during TTT: the base weights are untouched, LoRA B moves
        state = model.trunk.state_dict()
        lora = {k: v for k, v in state.items() if "lora_" in k}
        base = {k.replace(".base_layer", ""): v for k, v in state.items() if "lora_" not in k}
        assert set(base) == set(before)
        assert all(torch.equal(base[k], before[k]) for k in before)
        seen.append(max(float(v.abs().max()) for k, v in lora.items() if "lora_B" in k))
        trainable = {n for n, p in lm.named_parameters() if p.requires_grad}
        assert trainable and all("lora_" in n for n in trainable)
        return {}

    result = fold_with_ttt(model, UBQ[:30], steps=2, progress=False)
    fold_with_ttt(model, UBQ[:30], cfg=preset("esmfold_v1", steps=2), progress=False)
    from tttlab.engine.ttt import customized

    with customized(model.language_model, UBQ[:30], preset("esmfold_v1", steps=2, keep_best=False),
                    progress=False, callback=check):
        pass
    assert seen[0] == 0 and seen[-1] > 0  # B starts at zero (Gaussian init), then trains
    after = model.trunk.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert not any("lora" in n for n, _ in model.trunk.named_modules())
    assert len(result.plddt_per_step) == 3 and result.history[0]["loss"] is None


def test_best_step_is_the_highest_plddt_and_its_structure_is_returned(model, monkeypatch):
    real = model.predict
    values = iter([50.0, 60.0, 55.0, 60.0])  # step 1 and 3 tie: the earlier is kept

    def predict(seq):
        pred = real(seq)
        pred.mean_plddt = next(values)
        return pred

    monkeypatch.setattr(model, "predict", predict)
    result = fold_with_ttt(model, UBQ[:30], steps=3, progress=False, keep_all=True)
    assert result.best_step == 1 == int(np.argmax(result.plddt_per_step))
    assert sorted(result.predictions) == [0, 1, 2, 3]
    assert result.after is result.predictions[1]


def test_reference_scores_itself_perfectly():
    target = read_pdb_target(registry.path(UBQ_PDB))
    atoms = read_chain(registry.path(UBQ_PDB))[0]
    same = folding.Prediction(sequence=target.sequence, pdb=target.pdb_text(),
                              plddt=np.zeros(target.length), mean_plddt=0.0, ptm=0.0)
    scores = compare_to_reference(same, atoms)
    assert scores["tm_score"] == pytest.approx(1.0, abs=1e-4)
    assert scores["lddt"] == pytest.approx(1.0)
    assert scores["aligned_residues"] == target.length


def test_fold_cli_json(saved, tmp_path, capsys):
    """The issue's check: PDB biotite reads, 4 pLDDT values with step 0, best step = argmax,
    TM-scores in [0, 1]."""
    import biotite.structure.io as strucio

    fasta = tmp_path / "q.fasta"
    fasta.write_text(f">ubq40\n{UBQ[:40]}\n")
    assert cli.main(["fold", "--model", str(saved / "fold"), "--lm-head", str(saved / "mlm"),
                     "--fasta", str(fasta), "--pdb", str(registry.path(UBQ_PDB)),
                     "--ttt-steps", "3", "--out", str(tmp_path / "out"), "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(row["plddt_per_step"]) == 4
    assert row["best_step"] == int(np.argmax(row["plddt_per_step"]))
    assert row["plddt_before"] == pytest.approx(row["plddt_per_step"][0], abs=1e-3)
    for key in ("tm_score_before", "tm_score_after", "tm_score_last", "lddt_before", "lddt_after"):
        assert 0 <= row[key] <= 1
    atoms = strucio.load_structure(row["pdb"])
    assert len(set(atoms.res_id.tolist())) == 40
    assert row["loss_per_step"][0] is None and len(row["loss_per_step"]) == 4


@pytest.mark.parametrize("case", ["letters", "chain", "head"])
def test_bad_input_is_one_line(saved, tmp_path, case):
    args = ["--model", str(saved / "fold"), "--lm-head", str(saved / "mlm"), "--ttt-steps", "1",
            "--out", str(tmp_path), UBQ[:20]]
    if case == "letters":
        args[-1] = "MQIF1VKTL"
    elif case == "chain":
        args += ["--pdb", str(registry.path(UBQ_PDB)), "--chain", "Q"]
    else:
        args[3] = str(saved / "mlm48")
    out = subprocess.run([sys.executable, "-m", "tttlab", "fold", *args], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tttlab: error:")
    assert {"letters": "letters", "chain": "'Q'", "head": "width 48"}[case] in lines[0]



def test_lm_head_from_a_fair_esm_checkpoint(saved, tmp_path):
    """A fair-esm .pt of the same width gives its head; the output projection stays tied."""
    from tttlab.engine.models import build_esm2, save_fair_esm_checkpoint

    esm2, _ = build_esm2(num_layers=1, embed_dim=32, attention_heads=4, seed=3)
    save_fair_esm_checkpoint(esm2, tmp_path / "esm2_head.pt")
    model = folding.load_folding_model(saved / "fold", lm_head=tmp_path / "esm2_head.pt",
                                       device="cpu")
    lm = model.language_model
    assert torch.equal(lm.lm_head.dense.weight, esm2.lm_head.dense.weight)
    assert torch.equal(lm.lm_head.bias, esm2.lm_head.bias)
    assert lm.lm_head.weight is lm.embed_tokens.weight
    wide, _ = build_esm2(num_layers=1, embed_dim=64, attention_heads=4)
    save_fair_esm_checkpoint(wide, tmp_path / "esm2_wide.pt")
    with pytest.raises(ValueError, match="width 64"):
        folding.load_folding_model(saved / "fold", lm_head=tmp_path / "esm2_wide.pt")
