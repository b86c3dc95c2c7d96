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
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from profile_step import pretrain_chunk  # noqa: E402
from tttlab.engine import fastpath  # noqa: E402
from tttlab.training.pretrain import SIZES  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="m", choices=sorted(SIZES))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    chunk = pretrain_chunk(args.size)
    tokens = 8 * 512

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
    out = {"size": args.size, "tokens": tokens, "threads": 1,
           "eager_chunk_s": round(eager, 3), "compiled_chunk_s": round(compiled, 3),
           "speedup": round(eager / compiled, 3), "compile_s": round(first - compiled, 1),
           "break_even_chunks": round((first - compiled) / saved) if saved > 0 else None}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
