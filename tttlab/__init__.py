"""tttlab: protein test-time training (TTT) with ESM-2, for notebooks and the command line."""

from tttlab.engine.config import PRESETS, TTTConfig, preset, preset_for
from tttlab.engine.fastpath import set_fast_attention
from tttlab.engine.models import build_esm2, load_model
from tttlab.engine.scoring import (masked_marginals, optimal_window, pseudo_perplexity,
                                   representations, score_mutants, wt_marginals)
from tttlab.engine.ttt import TTTResult, customize, customized, restore, snapshot

__version__ = "0.1.0"

__all__ = ["TTTConfig", "PRESETS", "preset", "preset_for", "load_model", "build_esm2",
           "set_fast_attention", "masked_marginals", "optimal_window", "wt_marginals", "pseudo_perplexity",
           "score_mutants", "representations", "customize", "customized", "snapshot", "restore",
           "TTTResult"]
