"""Pretraining throughput per model size: median time of one optimiser step (8,192 padded tokens,
16 x 512-token rows, the v2 recipe) after a warm-up, sizes interleaved, on the threads given; the
step ``tttlab pretrain`` runs (``training.pretrain.optimiser_step``), once with the rows split
into one chunk per thread run side by side (what ``tttlab pretrain`` does on a CPU) and once as one
chunk on all intra-op threads.

    python benchmarks/bench_pretrain_step.py [--threads 2] [--repeats 5]

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
from tttlab.training.pretrain import SIZES, PretrainConfig, bert_init, optimiser_step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = PretrainConfig()
    rows = cfg.tokens_per_batch // (cfg.crop + 2)
    models = {}
    for size, (layers, width, heads) in SIZES.items():
        model, alphabet = build_esm2(layers, width, heads)
        bert_init(model)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        models[size] = (model, alphabet, opt)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, 24, (rows, cfg.crop + 2), generator=gen)
    tokens[:, 0], tokens[:, -1] = alphabet.cls_idx, alphabet.eos_idx

    pool = ThreadPoolExecutor(args.threads)
    modes = {"side_by_side": args.threads, "one_chunk": 1}

    def step(size, workers):
        model, alphabet, opt = models[size]
        corrupted, selected = bert_mask(tokens, alphabet, gen)
        opt.zero_grad(set_to_none=True)
        optimiser_step(model, opt, [p for p in model.parameters() if p.requires_grad], tokens,
                       corrupted, selected, cfg.grad_clip, pool, workers)

    times = {(size, mode): [] for size in SIZES for mode in modes}
    for size in SIZES:  # warm-up
        for workers in modes.values():
            step(size, workers)
    for _ in range(args.repeats):
        for size in SIZES:
            for mode, workers in modes.items():
                t0 = time.perf_counter()
                step(size, workers)
                times[size, mode].append(time.perf_counter() - t0)
    out = {"machine": {"processor": platform.processor() or platform.machine(),
                       "threads": args.threads, "torch": torch.__version__},
           "tokens_per_step": tokens.numel(), "repeats": args.repeats, "sizes": {}}
    for size, (layers, width, heads) in SIZES.items():
        params = sum(p.numel() for p in models[size][0].parameters())
        entry = {"layers": layers, "embed_dim": width, "heads": heads, "parameters": params}
        for mode in modes:
            med = statistics.median(times[size, mode])
            entry[mode] = {"step_seconds_median": round(med, 3),
                           "step_seconds_min_max": [round(min(times[size, mode]), 3),
                                                    round(max(times[size, mode]), 3)],
                           "tokens_per_second_median": round(tokens.numel() / med)}
        entry["tokens_per_second_median"] = entry["side_by_side"]["tokens_per_second_median"]
        out["sizes"][size] = entry
        print(size, entry)
    path = Path("benchmarks/results/pretrain_step_throughput.json")
    path.write_text(json.dumps(out, indent=1))
    print(path)


if __name__ == "__main__":
    main()
