"""Pretraining throughput per model size: median time of one optimiser step (8,192 padded tokens,
16 x 512-token rows, the v2 recipe) after a warm-up, sizes interleaved, on the threads given.

    python benchmarks/bench_pretrain_step.py [--threads 2] [--repeats 5]

Writes ``benchmarks/results/pretrain_step_throughput.json`` (median and spread per size, machine).
Run it on an otherwise idle machine: the numbers are wall-clock.
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tttlab.masking import bert_mask
from tttlab.models import build_esm2
from tttlab.pretrain import SIZES, PretrainConfig, bert_init, masked_logits


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

    def step(size):
        model, alphabet, opt = models[size]
        corrupted, selected = bert_mask(tokens, alphabet, gen)
        loss = F.cross_entropy(masked_logits(model, corrupted, selected), tokens[selected])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = {size: [] for size in SIZES}
    for size in SIZES:  # warm-up
        step(size)
    for _ in range(args.repeats):
        for size in SIZES:
            t0 = time.perf_counter()
            step(size)
            times[size].append(time.perf_counter() - t0)
    out = {"machine": {"processor": platform.processor() or platform.machine(),
                       "threads": args.threads, "torch": torch.__version__},
           "tokens_per_step": tokens.numel(), "repeats": args.repeats, "sizes": {}}
    for size, (layers, width, heads) in SIZES.items():
        med = statistics.median(times[size])
        params = sum(p.numel() for p in models[size][0].parameters())
        out["sizes"][size] = {"layers": layers, "embed_dim": width, "heads": heads,
                              "parameters": params, "step_seconds_median": round(med, 3),
                              "step_seconds_min_max": [round(min(times[size]), 3),
                                                       round(max(times[size]), 3)],
                              "tokens_per_second_median": round(tokens.numel() / med)}
        print(size, out["sizes"][size])
    path = Path("benchmarks/results/pretrain_step_throughput.json")
    path.write_text(json.dumps(out, indent=1))
    print(path)


if __name__ == "__main__":
    main()
