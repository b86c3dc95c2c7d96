"""tttlab: protein test-time training (TTT) with ESM-2, for notebooks and the command line."""

from .config import PRESETS, TTTConfig, preset, preset_for
from .models import build_esm2, load_model, set_fast_attention
from .scoring import (masked_marginals, pseudo_perplexity, representations, score_mutants,
                      wt_marginals)
from .ttt import TTTResult, customize, customized, restore, snapshot

__version__ = "0.1.0"

__all__ = ["TTTConfig", "PRESETS", "preset", "preset_for", "load_model", "build_esm2",
           "set_fast_attention", "masked_marginals", "wt_marginals", "pseudo_perplexity",
           "score_mutants", "representations", "customize", "customized", "snapshot", "restore",
           "TTTResult"]
