"""Shared fixtures: a small random ESM-2 (fast, no files needed), the shipped tttlab-mini, data paths."""

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TTTLAB_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

@pytest.fixture(scope="session")
def tiny():
    """A randomly initialised 2-layer ESM-2 (fast attention on) and its alphabet."""
    from tttlab.engine.models import build_esm2

    return build_esm2(num_layers=2, embed_dim=64, attention_heads=4, seed=0)


@pytest.fixture(scope="session")
def mini():
    """The shipped tttlab-mini model."""
    from tttlab.engine.models import load_model

    return load_model("tttlab-mini", device="cpu")


@pytest.fixture(scope="session")
def data_dir():
    from tttlab.data import data_dir

    return data_dir()


@pytest.fixture(scope="session")
def tem1():
    """TEM-1 beta-lactamase (286 aa), the wild type of BLAT_ECOLX_Stiffler_2015."""
    from tttlab.data import path, read_fasta

    return read_fasta(path("dms/BLAT_ECOLX_Stiffler_2015.wt.fasta"))[0][1]
