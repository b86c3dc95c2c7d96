"""Homolog-aware TTT costs: jackhmmer search time against the Swiss-Prot file for a 76-residue and
a 286-residue target (database load reported apart, cache off), and whole TTT runs with homologs
against runs without, same batch shape (medians of alternated runs). ``--regions`` also compares
whole homologs with their aligned region on the four assays with a family alignment
(``fitness.compare_homolog_ttt``, tttlab-mini).

    python benchmarks/bench_homologs.py --regions --json benchmarks/results/homologs_cpu_2core.json
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


def bench_regions(steps: int, max_variants: int) -> list[dict]:
    """Spearman with no TTT, wild-type TTT and homolog TTT per assay, homologs whole ("full") and
    cut to the target's columns ("aligned")."""
    from tttlab.studies.fitness import FAMILY_MSAS, compare_homolog_ttt

    model, _ = load_model("tttlab-mini", device="cpu")
    rows = []
    for region in ("full", "aligned"):
        cfg = preset("tttlab-mini", steps=steps, homolog_region=region)
        sources = {a: registry.path(f) for a, f in FAMILY_MSAS.items()}
        table = compare_homolog_ttt(model, sources, cfg, max_variants=max_variants,
                                    progress=False)
        rows += [{"region": region, **r} for r in table.round(4).to_dict("records")]
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the result here")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--regions", action="store_true",
                        help="also compare full and aligned homologs on four assays (minutes)")
    parser.add_argument("--region-steps", type=int, default=10)
    parser.add_argument("--region-variants", type=int, default=1000)
    args = parser.parse_args(argv)
    out = {"torch_threads": torch.get_num_threads(), "search": bench_search(),
           "ttt": bench_ttt(args.steps, args.repeats),
           "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    if args.regions:
        out["regions"] = bench_regions(args.region_steps, args.region_variants)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
