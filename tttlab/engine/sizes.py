"""What each ESM-2 size costs: parameter counts from the architecture and peak-memory estimates
for scoring and TTT on a GPU, so a user knows what fits before downloading gigabytes.

Estimates, not measurements: they count weights, gradients and the activations a backward pass
keeps (Korthikanti et al. 2022: about 34 bytes per token and channel per layer in 16-bit, with
fused attention keeping no T x T scores), plus the LM head's logits. CUDA's own context (~0.5 GiB)
and allocator slack come on top.
"""

from __future__ import annotations

from tttlab.engine.config import ESM2_SHAPES, TTTConfig, preset

VOCAB = 33  # ESM-1b alphabet, the LM head's rows
GIB = 2 ** 30


def esm2_parameters(layers: int, width: int, heads: int, vocab: int = VOCAB) -> int:
    """Exact parameter count of fair-esm's ``ESM2`` (tied LM head counted once, contact
    regression included)."""
    per_layer = 12 * width * width + 13 * width  # q, k, v, out, fc1, fc2 (+ biases), two norms
    head = width * width + width + 2 * width + vocab  # dense, its norm, bias (weight is tied)
    return vocab * width + layers * per_layer + 2 * width + head + layers * heads + 1


def memory_estimate(name: str, cfg: TTTConfig | None = None, tokens: int = 1024,
                    amp: bool = True, shape: tuple[int, int, int] | None = None) -> dict:
    """Peak GPU memory (GiB) for scoring and for one TTT micro-batch of ``cfg.batch_size`` copies
    of ``tokens`` tokens with the model ``name`` (one of ``ESM2_SHAPES``, or any name given with its
    ``shape``: layers, width, heads), fp32 weights as
    ``load_model`` keeps them, bf16 autocast when ``amp``.

    - scoring: weights + one row's live activations in fp32 (batches grow into free memory);
    - TTT, all parameters (SGD, no momentum, as published): weights + gradients (fp32) + autocast's
      bf16 weight copies + saved activations;
    - TTT, LoRA: weights + saved activations (adapters and their gradients are negligible).
    """
    layers, width, heads = shape or ESM2_SHAPES[name]
    cfg = cfg or preset(name)
    params = esm2_parameters(layers, width, heads)
    act_bytes = 2 if amp else 4
    saved = layers * 34 * width * tokens * cfg.batch_size * act_bytes / 2  # 34 B is for 16-bit
    logits = cfg.batch_size * tokens * VOCAB * (act_bytes + 4)  # logits and fp32 log-softmax
    one_row = 4 * tokens * (16 * width + 2 * heads * tokens)  # scoring's own per-row bound
    weights = 4 * params
    if cfg.trainable == "lora":
        ttt = weights + saved + logits
    else:
        ttt = weights + 4 * params + (2 * params if amp else 0) + saved + logits
    return {"model": name, "parameters": params, "layers": layers, "width": width, "heads": heads,
            "scoring_gib": round((weights + one_row) / GIB, 1), "ttt_gib": round(ttt / GIB, 1),
            "ttt_copies": cfg.batch_size, "tokens": tokens, "trainable": cfg.trainable}
