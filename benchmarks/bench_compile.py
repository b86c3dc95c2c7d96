"""Does ``torch.compile`` pay on this CPU? One pretraining chunk (the v2 'm' model, 8 x 512 tokens,
masked-token loss, forward and backward, one thread) with the engine's layer eager and compiled
(inductor; fixed shapes): the compile time, the median of 5 timed chunks each, and the break-even
count of chunks.

    python benchmarks/bench_compile.py [--size m] [--repeats 5]

Prints one JSON line. Needs a C++ compiler (inductor). Run it on an otherwise idle machine.
"""

import argparse
import json
import statistics
import time

import torch

from tttlab.engine import fastpath
from tttlab.engine.masking import bert_mask
from tttlab.engine.models import build_esm2
from tttlab.training.pretrain import SIZES, _chunk_loss, bert_init


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="m", choices=sorted(SIZES))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, alphabet = build_esm2(*SIZES[args.size])
    bert_init(model)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, 24, (8, 512), generator=gen)
    tokens[:, 0], tokens[:, -1] = alphabet.cls_idx, alphabet.eos_idx
    corrupted, selected = bert_mask(tokens, alphabet, gen)

    def chunk():
        loss = _chunk_loss(model, tokens, corrupted, selected, int(selected.sum()))
        torch.autograd.grad(loss, params, allow_unused=True)

    def timed():
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            chunk()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    chunk()  # warm-up
    eager = timed()
    eager_layer = fastpath.layer_forward
    fastpath.layer_forward = torch.compile(eager_layer, dynamic=False)
    try:
        start = time.perf_counter()
        chunk()  # compiles forward and backward
        first = time.perf_counter() - start
        compiled = timed()
    finally:
        fastpath.layer_forward = eager_layer
    saved = eager - compiled
    out = {"size": args.size, "tokens": tokens.numel(), "threads": 1,
           "eager_chunk_s": round(eager, 3), "compiled_chunk_s": round(compiled, 3),
           "speedup": round(eager / compiled, 3), "compile_s": round(first - compiled, 1),
           "break_even_chunks": round((first - compiled) / saved) if saved > 0 else None}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
