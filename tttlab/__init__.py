"""tttlab: protein test-time training (TTT) with ESM-2, for notebooks and the command line."""

from tttlab.engine.config import PRESETS, TTTConfig, preset, preset_for
from tttlab.engine.fastpath import set_fast_attention
from tttlab.engine.models import build_esm2, load_model
from tttlab.engine.scoring import (masked_marginals, optimal_window, pseudo_perplexity,
                                   representations, score_mutants, wt_marginals)
from tttlab.data.homologs import homologs
from tttlab.data.msa import read_msa
from tttlab.common.homolog_set import HomologSet
from tttlab.engine.ttt import TTTResult, restore, snapshot
from tttlab.studies.family import customize, customized

__version__ = "0.1.0"

__all__ = ["TTTConfig", "PRESETS", "preset", "preset_for", "load_model", "build_esm2",
           "set_fast_attention", "masked_marginals", "optimal_window", "wt_marginals",
           "pseudo_perplexity", "score_mutants", "representations", "customize", "customized", "snapshot", "restore",
           "TTTResult", "homologs", "read_msa", "HomologSet"]
