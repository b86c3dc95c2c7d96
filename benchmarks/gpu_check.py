"""GPU check, one run of under 5 minutes on one GPU: the engine against stock fair-esm under bf16
autocast (equivalence within stated tolerances), scoring and TTT speed against the stock loops,
and peak GPU memory next to ``tttlab models``' estimate, for random-weight ESM-2 35M and 650M
architectures (speed and memory do not depend on the weights); with ``--fold esmfold_v1``, ESMFold
TTT (``studies.folding.fold_with_ttt``, the published LoRA recipe, folded after every step) on a
random-weight model of ESMFold's architecture (ESM-2 3B + the 48-block trunk): seconds per step and
peak GPU memory for the protein length. Writes one JSON file.

    python benchmarks/gpu_check.py                                   # cuda, 35M + 650M
    python benchmarks/gpu_check.py --models none --fold esmfold_v1 --length 300 --steps 2
    python benchmarks/gpu_check.py --device cpu --models tiny --fold tiny --length 40 --steps 1 --repeats 1

Tolerances (bf16 keeps 8 bits of mantissa, so engine and stock round differently):
masked marginals max |diff| <= 0.25 nats and Spearman >= 0.995 over all L x 20 values; TTT losses
over the same batches within 3 % of each other; fp32 (autocast off) marginals within 1e-3.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_engine as be  # noqa: E402
from tttlab.engine import scoring, ttt  # noqa: E402
from tttlab.engine.config import ESM2_SHAPES, preset  # noqa: E402
from tttlab.engine.models import build_esm2, resolve_device  # noqa: E402
from tttlab.engine.sizes import memory_estimate  # noqa: E402

TOLERANCE = {"bf16_marginals_max_abs": 0.25, "bf16_marginals_spearman": 0.995,
             "bf16_ttt_loss_rel": 0.03, "fp32_marginals_max_abs": 1e-3}
AA = "ACDEFGHIKLMNPQRSTVWY"


def random_protein(length: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    return "M" + "".join(rng.choice(list(AA), length - 1))


def build(name: str, device):
    shape = (2, 64, 4) if name == "tiny" else ESM2_SHAPES[name]
    model, _ = build_esm2(*shape, seed=0)
    return model.to(device)


def equivalence(model, seq: str, cfg) -> dict:
    """Engine vs stock fair-esm: masked marginals in bf16 and in fp32, TTT losses in bf16 on the
    same batches."""
    stock = be.stock_model(model)
    bf16 = scoring.masked_marginals(model, seq)
    ref = be.stock_marginals(stock, seq)
    out = {"bf16_marginals_max_abs": float(np.abs(bf16 - ref).max()),
           "bf16_marginals_spearman": float(spearmanr(bf16.ravel(), ref.ravel())[0])}
    fp32 = scoring.masked_marginals(model, seq, amp=False)
    with torch.autocast(model_device(model).type, enabled=False):
        ref32 = stock_marginals_fp32(stock, seq)
    out["fp32_marginals_max_abs"] = float(np.abs(fp32 - ref32).max())
    seen, real = [], ttt.corrupt  # the copies the engine draws (its order differs on CUDA)

    def recording(batch, *a, **k):
        corrupted = real(batch, *a, **k)
        seen.append((batch.clone(), corrupted[0].clone()))
        return corrupted

    ttt.corrupt = recording
    try:
        with ttt.customized(model, seq, cfg, progress=False, steps=1) as result:
            engine_loss = result.history[1]["loss"]
    finally:
        ttt.corrupt = real
    stock = be.stock_model(model)  # the weights before the step, as the engine's first loss
    with torch.no_grad(), scoring.autocast_for(model_device(model)):
        losses = [F.cross_entropy(stock(c)["logits"].float().flatten(0, 1), b.flatten()).item()
                  for b, c in seen]
    stock_loss = float(np.average(losses, weights=[len(b) for b, _ in seen]))
    out["bf16_ttt_loss_rel"] = abs(engine_loss - stock_loss) / abs(stock_loss)
    out["passed"] = (out["bf16_marginals_max_abs"] <= TOLERANCE["bf16_marginals_max_abs"]
                     and out["bf16_marginals_spearman"] >= TOLERANCE["bf16_marginals_spearman"]
                     and out["bf16_ttt_loss_rel"] <= TOLERANCE["bf16_ttt_loss_rel"]
                     and out["fp32_marginals_max_abs"] <= TOLERANCE["fp32_marginals_max_abs"])
    return out


def model_device(model):
    return scoring.model_device(model)


def stock_marginals_fp32(stock, seq):
    """``bench_engine.stock_marginals`` without autocast."""
    alphabet, device = stock.alphabet, model_device(stock)
    tokens = scoring.encode(alphabet, seq, device)[None]
    aa = [alphabet.get_idx(a) for a in AA]
    out = np.empty((len(seq), 20), dtype=np.float32)
    with torch.no_grad():
        for i in range(len(seq)):
            t = tokens.clone()
            t[0, i + 1] = alphabet.mask_idx
            out[i] = torch.log_softmax(stock(t)["logits"][0, i + 1].float(), -1)[aa].cpu().numpy()
    return out


def speed(model, seq: str, cfg, steps: int, repeats: int) -> dict:
    """Whole calls, engine and stock interleaved after a warm-up, medians."""
    device = model_device(model)
    stock = be.stock_model(model)
    scoring.masked_marginals(model, seq[:20]), be.stock_marginals(stock, seq[:20])
    batches = be.ttt_batches(model, seq, cfg, steps)
    with ttt.customized(model, seq, cfg, progress=False, steps=1):
        pass
    score_e, score_s, ttt_e, ttt_s = [], [], [], []
    for _ in range(repeats):
        t = be.clock(device)
        scoring.masked_marginals(model, seq)
        score_e.append(be.clock(device) - t)
        t = be.clock(device)
        be.stock_marginals(stock, seq)
        score_s.append(be.clock(device) - t)
        t = be.clock(device)
        with ttt.customized(model, seq, cfg, progress=False, steps=steps):
            pass
        ttt_e.append(be.clock(device) - t)
        fresh = be.stock_model(model)
        t = be.clock(device)
        be.stock_ttt(fresh, batches, cfg, steps)
        ttt_s.append(be.clock(device) - t)
        del fresh
    med = statistics.median
    return {"scoring_engine_s": be.spread(score_e), "scoring_stock_s": be.spread(score_s),
            "scoring_speedup": med(score_s) / med(score_e),
            "ttt_engine_run_s": be.spread(ttt_e), "ttt_stock_run_s": be.spread(ttt_s),
            "ttt_run_ratio": med(ttt_e) / med(ttt_s),
            "ttt_engine_s_per_step": med(ttt_e) / steps}


def peak_memory(model, seq: str, cfg, steps: int) -> dict:
    """Peak allocated GiB for scoring and for a TTT run (CUDA only)."""
    device = model_device(model)
    if device.type != "cuda":
        return {}
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    scoring.masked_marginals(model, seq, batch_size=1)
    score = torch.cuda.max_memory_allocated(device) / 2 ** 30
    torch.cuda.reset_peak_memory_stats(device)
    with ttt.customized(model, seq, cfg, progress=False, steps=steps):
        pass
    return {"scoring_batch1_gib": round(score, 2),
            "ttt_gib": round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)}


def esmfold_architecture(device, tiny: bool = False):
    """A random-weight ESMFold of esmfold_v1's shape (transformers' default trunk, ESM-2 3B language
    model in float32, no dropout), built on ``device``; ``tiny``: ``engine.folding``'s small test
    model."""
    from transformers import EsmConfig, EsmForProteinFolding

    from tttlab.engine import folding

    if tiny:
        return folding.random_folding_model(device=device)
    import esm

    vocab = list(esm.data.Alphabet.from_architecture("ESM-1b").all_toks)
    layers, width, heads = ESM2_SHAPES["esm2_t36_3B_UR50D"]
    config = EsmConfig(vocab_size=len(vocab), hidden_size=width, num_hidden_layers=layers,
                       num_attention_heads=heads, intermediate_size=4 * width,
                       position_embedding_type="rotary", token_dropout=True, mask_token_id=32,
                       pad_token_id=1, emb_layer_norm_before=False, layer_norm_eps=1e-5,
                       max_position_embeddings=1026, vocab_list=vocab, is_folding_model=True,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                       esmfold_config={"fp16_esm": False})
    with torch.device(device):
        trunk = EsmForProteinFolding(config)
    return folding.folding_model(trunk, None, "esmfold_v1 architecture, random weights").to(device)


def fold_check(kind: str, device, length: int, steps: int) -> dict:
    """ESMFold TTT on a random protein: seconds, seconds per step, peak GPU memory."""
    from tttlab.studies.folding import fold_with_ttt

    model = esmfold_architecture(device, tiny=kind == "tiny")
    seq = random_protein(length)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    model.predict(seq)
    fold_s = time.perf_counter() - start
    if device.type == "cuda":
        fold_gib = torch.cuda.max_memory_allocated(device) / 2 ** 30
        torch.cuda.reset_peak_memory_stats(device)
    result = fold_with_ttt(model, seq, steps=steps, progress=False)
    out = {"model": model.name, "length": length, "steps": steps,
           "parameters": sum(p.numel() for p in model.parameters()),
           "fold_s": round(fold_s, 2), "ttt_run_s": round(result.seconds, 2),
           "step_s_median": statistics.median(
               b["seconds"] - a["seconds"] for a, b in zip(result.history, result.history[1:])),
           "plddt_per_step": result.plddt_per_step, "best_step": result.best_step}
    if device.type == "cuda":
        out["fold_peak_gib"] = round(fold_gib, 2)
        out["ttt_peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
    return out


def run(args) -> dict:
    device = resolve_device(args.device)
    seq = random_protein(args.length)
    out = {"machine": be.machine(device), "tolerance": TOLERANCE, "length": args.length,
           "steps": args.steps, "repeats": args.repeats, "models": {}}
    started = time.perf_counter()
    for name in [m for m in args.models.split(",") if m != "none"]:
        model = build(name, device)
        cfg = preset("tttlab-mini" if name == "tiny" else name)
        row = {"equivalence": equivalence(model, seq, cfg),
               "speed": speed(model, seq, cfg, args.steps, args.repeats),
               "peak_memory": peak_memory(model, seq, cfg, args.steps)}
        if name != "tiny":
            row["estimate"] = memory_estimate(name, cfg, tokens=args.length + 2)
        out["models"][name] = row
        print(json.dumps({name: row}), flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.fold != "none":
        out["fold"] = fold_check(args.fold, device, args.length, args.steps)
        print(json.dumps({"fold": out["fold"]}), flush=True)
    out["seconds"] = round(time.perf_counter() - started, 1)
    out["all_equivalent"] = all(r["equivalence"]["passed"] for r in out["models"].values())
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", default="esm2_t12_35M_UR50D,esm2_t33_650M_UR50D")
    parser.add_argument("--fold", choices=("none", "tiny", "esmfold_v1"), default="none",
                        help="also ESMFold TTT on a random-weight model of that shape")
    parser.add_argument("--length", type=int, default=300, help="residues of the test protein")
    parser.add_argument("--steps", type=int, default=3, help="TTT steps per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each (medians)")
    parser.add_argument("--json", default="benchmarks/results/gpu_check.json",
                        help="where to write the result")
    args = parser.parse_args(argv)
    out = run(args)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"equivalent within tolerance: {out['all_equivalent']}; {out['seconds']} s; "
          f"written to {args.json}")
    return out


if __name__ == "__main__":
    main()
