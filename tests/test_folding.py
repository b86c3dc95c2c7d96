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


def test_language_model_is_esmfolds_own_with_the_masked_lm_head(saved, model):
    """TTT trains ESMFold's own language model (shared, not copied: folding is untouched), and its
    logits are those of the masked LM when the two share a body."""
    from transformers import EsmForMaskedLM, EsmForProteinFolding

    assert model.language_model.esm is model.trunk.esm
    stock = EsmForProteinFolding.from_pretrained(saved / "fold").eval()
    with torch.no_grad():
        a, b = stock.infer(UBQ[:40]), model.trunk.infer(UBQ[:40])
    assert torch.equal(a["positions"], b["positions"]) and torch.equal(a["plddt"], b["plddt"])
    mlm = EsmForMaskedLM.from_pretrained(saved / "mlm").eval()
    mlm.esm.load_state_dict(stock.esm.state_dict(), strict=False)
    tokens = torch.tensor([[0, 5, 6, 7, 8, 9, 10, 2]])
    with torch.no_grad():
        assert (mlm(tokens).logits - model.language_model(tokens)["logits"]).abs().max() < 1e-5
    lm = model.language_model
    assert lm.lm_head.decoder.weight is lm.embed_tokens.weight  # tied, as in ESM-2


def test_published_recipe_preset():
    cfg = preset("esmfold_v1")
    assert (cfg.lr, cfg.batch_size, cfg.grad_accum_steps, cfg.steps) == (4e-4, 4, 4, 30)
    assert (cfg.trainable, cfg.lora_rank, cfg.lora_alpha, cfg.lora_init) == ("lora", 8, 256.0,
                                                                             "gaussian")
    assert cfg.loss == "masked_tokens" and cfg.keep_best and cfg.keep_best_by == "plddt"
    assert cfg.keep_best_mode == "max"


def test_only_lora_trains_and_every_weight_comes_back(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    seen = []

    def check(step, lm):  # during TTT: the base weights are untouched, LoRA B moves
        state = model.state_dict()
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
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert not any("lora" in n for n, _ in model.trunk.named_modules())
    assert [p.requires_grad for p in model.parameters()] == flags
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
    assert lm.lm_head.decoder.weight is lm.embed_tokens.weight
    wide, _ = build_esm2(num_layers=1, embed_dim=64, attention_heads=4)
    save_fair_esm_checkpoint(wide, tmp_path / "esm2_wide.pt")
    with pytest.raises(ValueError, match="width 64"):
        folding.load_folding_model(saved / "fold", lm_head=tmp_path / "esm2_wide.pt")


def test_transformers_default_config_folds_with_ttt(tmp_path, capsys):
    """Not every transformers ESM is ESM-2-shaped: absolute positions, an fp16 language model, a
    feed-forward not 4x the width, no token dropout (EsmConfig's defaults) work the same way."""
    from transformers import EsmConfig, EsmForMaskedLM, EsmForProteinFolding

    sizes = dict(vocab_size=33, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=48, pad_token_id=1)
    trunk = {"num_blocks": 1, "sequence_state_dim": 32, "pairwise_state_dim": 16,
             "sequence_head_width": 16, "pairwise_head_width": 8, "position_bins": 8,
             "structure_module": {"ipa_dim": 16, "num_angles": 7, "num_blocks": 1, "num_heads_ipa": 2,
                                  "pairwise_dim": 16, "resnet_dim": 16, "sequence_dim": 32}}
    torch.manual_seed(0)
    EsmForProteinFolding(EsmConfig(is_folding_model=True, esmfold_config={
        "trunk": trunk, "lddt_head_hid_dim": 16}, **sizes)).save_pretrained(tmp_path / "fold")
    EsmForMaskedLM(EsmConfig(**sizes)).save_pretrained(tmp_path / "mlm")
    assert cli.main(["fold", "--model", str(tmp_path / "fold"), "--lm-head", str(tmp_path / "mlm"),
                     UBQ[:30], "--pdb", str(registry.path(UBQ_PDB)), "--ttt-steps", "2",
                     "--out", str(tmp_path / "out"), "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(row["plddt_per_step"]) == 3 and 0 <= row["tm_score_after"] <= 1
    assert row["loss_per_step"][1] > 0


def test_esmfold_v1_offline_is_one_line(tmp_path):
    import os

    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "tttlab", "fold", "--model", "esmfold_v1",
                          UBQ[:20], "--ttt-steps", "1", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "esmfold_v1" in lines[0] and "save_pretrained" in lines[0]


def test_fair_esm_backend_without_openfold_is_one_line(tmp_path):
    pytest.importorskip("esm")
    try:
        import openfold  # noqa: F401
        pytest.skip("OpenFold is installed: the backend would download esmfold_v1")
    except ImportError:
        pass
    out = subprocess.run([sys.executable, "-m", "tttlab", "fold", "--backend", "fair-esm",
                          UBQ[:20], "--ttt-steps", "1", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "OpenFold" in lines[0]
