"""ipywidgets explorers for the notebooks. Each takes the model and data it needs, runs TTT or scoring
only when the user presses Run (``interact_manual``), and draws with ``tttlab.plots``.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------- fitness

# -------------------------------------------------------------------------- structure

# --------------------------------------------------------------------------- function

# ---------------------------------------------------------------------- your protein
