"""The named-model path, offline: random-weight checkpoints of the real ESM-2 8M and 35M
architectures in fair-esm's hub-cache layout, loaded by name from the library, the CLI and notebook
00; with no file and no network, one line that names the file to put there. Presets and memory
estimates for every ESM-2 size."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tttlab
from tttlab.engine.config import ESM2_SHAPES, PRESET_SOURCES, PRESETS, preset
from tttlab.engine.models import (ESM2_NAMES, build_esm2, hub_paths, load_model,
                                  save_contact_regression, save_fair_esm_checkpoint)
from tttlab.engine.sizes import esm2_parameters, memory_estimate

ROOT = Path(__file__).resolve().parents[1]
UBQ = "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG"
SMALL = ("esm2_t6_8M_UR50D", "esm2_t12_35M_UR50D")


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """A TORCH_HOME whose hub cache holds random-weight 8M and 35M checkpoints under their names."""
    home = tmp_path_factory.mktemp("torch_home")
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    try:
        for name in SMALL:
            model, _ = build_esm2(*ESM2_SHAPES[name], seed=1)
            weights, regression = hub_paths(name)
            assert weights.parent == home / "hub" / "checkpoints"
            weights.parent.mkdir(parents=True, exist_ok=True)
            save_fair_esm_checkpoint(model, weights)
            save_contact_regression(model, regression)
        yield home
    finally:
        if old is None:
            os.environ.pop("TORCH_HOME")
        else:
            os.environ["TORCH_HOME"] = old


def _offline_env(**extra):
    """The environment of a CLI subprocess with every web request sent to a closed local port."""
    env = dict(os.environ, https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9",
               HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", no_proxy="")
    env.update(extra)
    return env


@pytest.mark.parametrize("name", SMALL)
def test_named_checkpoints_load_from_the_hub_cache(torch_home, name):
    model, alphabet = load_model(name, device="cpu")
    expected, _ = build_esm2(*ESM2_SHAPES[name], seed=1)
    state = model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in expected.state_dict().items())
    assert (model.num_layers, model.embed_dim, model.attention_heads) == ESM2_SHAPES[name]
    assert sum(p.numel() for p in model.parameters()) == esm2_parameters(*ESM2_SHAPES[name])
    assert tttlab.preset_for(model) == preset(name) == PRESETS[name]
    contacts = model(torch.tensor([[alphabet.cls_idx] + [alphabet.get_idx(a) for a in UBQ[:20]]
                                   + [alphabet.eos_idx]]), return_contacts=True)["contacts"]
    assert contacts.shape == (1, 20, 20)


def test_cli_runs_a_named_model(torch_home):
    out = subprocess.run([sys.executable, "-m", "tttlab", "perplexity", "--model", SMALL[0],
                          UBQ[:30], "--ttt-steps", "1", "--json"], capture_output=True, text=True,
                         env=_offline_env(TORCH_HOME=str(torch_home)), timeout=300)
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["length"] == 30 and row["pseudo_perplexity_after"] > 0


def test_missing_weights_offline_is_one_line_naming_the_file(tmp_path):
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "tttlab", "perplexity", "--model", SMALL[0],
                          UBQ[:30]], capture_output=True, text=True, timeout=120,
                         env=_offline_env(TORCH_HOME=str(tmp_path)))
    assert time.monotonic() - start < 60
    assert out.returncode != 0 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert str(tmp_path / "hub" / "checkpoints" / f"{SMALL[0]}.pt") in lines[0]
    assert not (tmp_path / "hub" / "checkpoints" / f"{SMALL[0]}.pt").exists()  # no partial file


def test_notebook_00_runs_with_a_real_model_name(torch_home, tmp_path):
    """Notebook 00 with its one settings line changed to an ESM-2 name, as a user would."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "notebooks" / "00_quickstart.ipynb", as_version=4)
    line = 'MODEL = "tttlab-mini"'
    settings = [c for c in nb.cells if c.cell_type == "code" and line in c.source]
    assert len(settings) == 1
    settings[0].source = settings[0].source.replace(line, f'MODEL = "{SMALL[0]}"')
    old = os.environ.get("CI")
    os.environ["CI"] = "true"  # the stated smoke configuration
    try:
        nbclient.NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(tmp_path)}}
                                ).execute()
    finally:
        if old is None:
            os.environ.pop("CI")
        else:
            os.environ["CI"] = old
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.get("outputs", []))
    assert "pseudo-perplexity before TTT" in text and "all weights identical to before TTT: True" in text
    assert (tmp_path / "outputs").is_dir()


def test_every_esm2_size_has_its_own_documented_preset():
    configs = [preset(name) for name in ESM2_NAMES]
    assert len(set(configs)) == len(ESM2_NAMES) == 6
    assert all(PRESET_SOURCES[name].startswith(("published", "rule")) for name in ESM2_NAMES)
    assert "rule" in preset.__doc__ and "published" in preset.__doc__
    # the published ones, as in ProteinTTT's code
    assert (preset("esm2_t12_35M_UR50D").lr, preset("esm2_t12_35M_UR50D").grad_accum_steps) == (4e-4, 16)
    assert (preset("esm2_t33_650M_UR50D").lr, preset("esm2_t33_650M_UR50D").grad_accum_steps) == (4e-5, 4)
    big = preset("esm2_t36_3B_UR50D")  # ESMFold's ESM-2 3B recipe
    assert (big.trainable, big.lora_rank, big.lora_alpha / big.lora_rank, big.lr) == ("lora", 8, 32, 4e-4)
    # the rule: lr on the power law through the published 35M and 650M points
    for name, n in (("esm2_t6_8M_UR50D", 8), ("esm2_t30_150M_UR50D", 150)):
        assert preset(name).lr == pytest.approx(4e-4 * (n / 35) ** -0.788, rel=0.03)
    assert preset("esm2_t48_15B_UR50D").lr == pytest.approx(4e-4 * 5 ** -0.788, rel=0.03)


def test_memory_estimates_grow_with_size_and_use_exact_parameter_counts():
    for layers, width, heads in ((2, 64, 4), (6, 320, 20)):
        model, _ = build_esm2(layers, width, heads)
        assert sum(p.numel() for p in model.parameters()) == esm2_parameters(layers, width, heads)
    rows = [memory_estimate(name) for name in ESM2_NAMES]
    assert [r["parameters"] for r in rows] == sorted(r["parameters"] for r in rows)
    assert rows[3]["parameters"] == 651_043_254  # ESM-2 650M as published
    assert all(r["ttt_gib"] > r["scoring_gib"] > 0 for r in rows)
    assert memory_estimate(ESM2_NAMES[3], tokens=512)["ttt_gib"] < rows[3]["ttt_gib"]
    out = subprocess.run([sys.executable, "-m", "tttlab", "models", "--json"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    listed = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["model"] for r in listed] == ["tttlab-mini", *ESM2_NAMES]
    assert all(r["weights"].endswith(f"{r['model']}.pt") for r in listed[1:])
    mini, _ = load_model("tttlab-mini")
    assert listed[0]["parameters"] == sum(p.numel() for p in mini.parameters())
    assert listed[0]["downloaded"] and listed[0]["lr"] == preset("tttlab-mini").lr
