"""Reference implementations the tests compare the engine with."""

import numpy as np
import torch

from tttlab.common.sequences import STANDARD_AA
from tttlab.engine.scoring import encode


def stock_loop_marginals(model, alphabet, seq):
    """The textbook loop: one masked position per forward pass, full logits each time; returns the
    L x 20 log-probabilities in ``STANDARD_AA`` order."""
    tokens = encode(alphabet, seq)[None]
    aa = [alphabet.get_idx(a) for a in STANDARD_AA]
    rows = []
    with torch.no_grad():
        for i in range(len(seq)):
            t = tokens.clone()
            t[0, i + 1] = alphabet.mask_idx
            rows.append(torch.log_softmax(model(t)["logits"][0, i + 1], -1)[aa].numpy())
    return np.array(rows)
