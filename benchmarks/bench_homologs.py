"""Homolog-aware TTT costs: jackhmmer search time against the Swiss-Prot file for a 76-residue and
a 286-residue target (database load reported apart, cache off), and whole TTT runs with homologs
against runs without, same batch shape (medians of alternated runs).

    python benchmarks/bench_homologs.py --json benchmarks/results/homologs_cpu_2core.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tttlab.data import registry  # noqa: E402
from tttlab.data.fasta import read_fasta  # noqa: E402
from tttlab.data.homologs import DATABASE, _database, from_alignment, search  # noqa: E402
from tttlab.engine.config import preset  # noqa: E402
from tttlab.engine.models import load_model  # noqa: E402
from tttlab.engine.ttt import customized  # noqa: E402

TARGETS = {"ubiquitin (76 aa)": "dms/RL40A_YEAST_Roscoe_2013.wt.fasta",
           "TEM-1 (286 aa)": "dms/BLAT_ECOLX_Stiffler_2015.wt.fasta"}


def bench_search() -> dict:
    start = time.perf_counter()
    _database(registry.path(DATABASE))
    out = {"database_load_s": round(time.perf_counter() - start, 1), "targets": {}}
    for name, fasta in TARGETS.items():
        seq = read_fasta(registry.path(fasta))[0][1]
        start = time.perf_counter()
        hits = search(seq, cache=False)
        seconds = time.perf_counter() - start
        family = from_alignment(seq, hits, "aligned")
        out["targets"][name] = {"search_s": round(seconds, 1), "domains": len(hits) - 1,
                                "usable_homologs": len(family),
                                "effective_homologs": round(sum(family.weights), 1)}
    return out


def bench_ttt(steps: int, repeats: int) -> dict:
    model, _ = load_model("tttlab-mini", device="cpu")
    seq = read_fasta(registry.path(TARGETS["ubiquitin (76 aa)"]))[0][1]
    family = from_alignment(seq, search(seq), "aligned")
    cfg = preset("tttlab-mini", steps=steps)
    with customized(model, seq, cfg, progress=False, steps=1):
        pass  # warm-up
    plain, homolog = [], []
    for _ in range(repeats):
        for runs, fam in ((plain, None), (homolog, family)):
            start = time.perf_counter()
            with customized(model, seq, cfg, progress=False, homologs=fam):
                pass
            runs.append(time.perf_counter() - start)
    med = statistics.median
    return {"target": "ubiquitin (76 aa)", "n_homologs": len(family), "steps": steps,
            "repeats": repeats, "single_sequence_run_s": plain, "homolog_run_s": homolog,
            "ratio_homolog_to_single": med(homolog) / med(plain)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the result here")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    out = {"torch_threads": torch.get_num_threads(), "search": bench_search(),
           "ttt": bench_ttt(args.steps, args.repeats),
           "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
