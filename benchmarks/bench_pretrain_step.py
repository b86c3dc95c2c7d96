"""Pretraining throughput per model size: median time of one optimiser step (8,192 padded tokens,
16 x 512-token rows, the v2 recipe) after a warm-up, sizes interleaved, on the threads given; the
step ``tttlab pretrain`` runs (``training.pretrain.optimiser_step``), once with the rows split
into one chunk per thread run side by side (what ``tttlab pretrain`` does on a CPU) and once as one
chunk on all intra-op threads; and, interleaved with them, the side-by-side step with the last layer
run at every position (``full_last_layer``: the path before ``engine.scoring.selected_hidden``),
for the speedup of running it at the masked positions only; and the side-by-side step under
bfloat16 autocast (``bf16``: ``tttlab pretrain --bf16``), for its speedup on this CPU.

    python benchmarks/bench_pretrain_step.py [--threads 2] [--repeats 5] [--sizes s m l]

Writes ``benchmarks/results/pretrain_step_throughput.json`` (median and spread per size, machine).
Run it on an otherwise idle machine: the numbers are wall-clock.
"""

import argparse
import json
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from tttlab.engine.masking import bert_mask
from tttlab.engine.models import build_esm2
from tttlab.engine.scoring import _final_hidden
from tttlab.training import pretrain
from tttlab.training.pretrain import SIZES, PretrainConfig, bert_init, optimiser_step


def _full_last_layer_logits(model, corrupted, selected):
    """The masked logits with the last layer run at every position, indexed afterwards."""
    return model.lm_head(_final_hidden(model, corrupted)[selected])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=list(SIZES))
    args = parser.parse_args()
    sizes = {k: v for k, v in SIZES.items() if k in args.sizes}
    torch.set_num_threads(args.threads)
    cfg = PretrainConfig()
    rows = cfg.tokens_per_batch // (cfg.crop + 2)
    models = {}
    for size, (layers, width, heads) in sizes.items():
        model, alphabet = build_esm2(layers, width, heads)
        bert_init(model)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        models[size] = (model, alphabet, opt)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, 24, (rows, cfg.crop + 2), generator=gen)
    tokens[:, 0], tokens[:, -1] = alphabet.cls_idx, alphabet.eos_idx

    pool = ThreadPoolExecutor(args.threads)
    modes = {"side_by_side": args.threads, "one_chunk": 1, "full_last_layer": args.threads,
             "bf16": args.threads}
    fast = pretrain.masked_logits

    def step(size, workers, mode):
        model, alphabet, opt = models[size]
        corrupted, selected = bert_mask(tokens, alphabet, gen)
        opt.zero_grad(set_to_none=True)
        pretrain.masked_logits = _full_last_layer_logits if mode == "full_last_layer" else fast
        try:
            optimiser_step(model, opt, [p for p in model.parameters() if p.requires_grad], tokens,
                           corrupted, selected, cfg.grad_clip, pool, workers, bf16=mode == "bf16")
        finally:
            pretrain.masked_logits = fast

    times = {(size, mode): [] for size in sizes for mode in modes}
    for size in sizes:  # warm-up
        for mode, workers in modes.items():
            step(size, workers, mode)
    for _ in range(args.repeats):
        for size in sizes:
            for mode, workers in modes.items():
                t0 = time.perf_counter()
                step(size, workers, mode)
                times[size, mode].append(time.perf_counter() - t0)
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.is_file() else ""
    out = {"machine": {"processor": platform.processor() or platform.machine(),
                       "threads": args.threads, "torch": torch.__version__,
                       "avx512_bf16": " avx512_bf16" in flags, "amx_bf16": " amx_bf16" in flags},
           "tokens_per_step": tokens.numel(), "repeats": args.repeats, "sizes": {}}
    for size, (layers, width, heads) in sizes.items():
        params = sum(p.numel() for p in models[size][0].parameters())
        entry = {"layers": layers, "embed_dim": width, "heads": heads, "parameters": params}
        for mode in modes:
            med = statistics.median(times[size, mode])
            entry[mode] = {"step_seconds_median": round(med, 3),
                           "step_seconds_min_max": [round(min(times[size, mode]), 3),
                                                    round(max(times[size, mode]), 3)],
                           "tokens_per_second_median": round(tokens.numel() / med)}
        entry["tokens_per_second_median"] = entry["side_by_side"]["tokens_per_second_median"]
        entry["speedup_vs_full_last_layer"] = round(
            entry["full_last_layer"]["step_seconds_median"]
            / entry["side_by_side"]["step_seconds_median"], 3)
        entry["bf16_speedup"] = round(entry["side_by_side"]["step_seconds_median"]
                                      / entry["bf16"]["step_seconds_median"], 3)
        out["sizes"][size] = entry
        print(size, entry)
    path = Path("benchmarks/results/pretrain_step_throughput.json")
    path.write_text(json.dumps(out, indent=1))
    print(path)


if __name__ == "__main__":
    main()
