"""Choose tttlab-mini's TTT preset on proteins the project never evaluates on.

ProteinTTT publishes settings for ESM-2 35M and 650M only. tttlab-mini is 7x smaller than ESM-2 35M and
far less trained, so its preset is chosen here, on held-out pretraining sequences (the validation split
of ``tttlab pretrain``: never trained on, and none of them a DMS, structure, localisation or TPS
protein). For each setting (lr x micro-batches of 4 copies), TTT runs on each held-out sequence and is
measured three ways:

* ``mean_relative_drop``: the drop of the sequence's own pseudo-perplexity (``min_relative_drop``:
  the worst case). It grows with the step size up to memorising the sequence, so it cannot choose.
* ``mean_family_drop``: the drop of the pseudo-perplexity of the sequence's homologs, which TTT never
  saw: Swiss-Prot proteins found by the jackhmmer search that homolog-aware TTT uses
  (``tttlab.data.homologs``, region "aligned"), up to ``--homologs`` of them at 30-70 % identity
  over their residues in the sequence's columns. TTT is meant to adapt the model to the protein's family (what is
  tolerated where), which is what zero-shot fitness reads; memorising one sequence does not help its
  relatives, and forgetting proteins in general hurts them.
* ``mean_control_rise``: the change of an unrelated held-out sequence's pseudo-perplexity.

The rule: the setting with the largest ``mean_family_drop``. (Until 2026-12-05 the rule was the
largest own drop among settings whose control change is not positive. Measured on the run's step-9,025
weights, every setting from lr 2e-3 up raised the unrelated control a little (+0.06 % at 2e-3), so that
rule would pick the smallest learning rate of any grid, i.e. no TTT at all: specialising to one protein
always costs an unrelated one something, and that cost is not what TTT is judged by.) The script prints
the choice as its last line.

    python benchmarks/tune_mini_preset.py --chains 8 --max-len 300 --threads 1 --json out.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import time

import torch

import tttlab
from tttlab.data import data_dir
from tttlab.training.pretrain import (PretrainConfig, hash_order, heldout_chains,
                                      pretraining_meta)
from tttlab.engine.scoring import pseudo_perplexity


IDENTITY = (0.3, 0.7)  # homologs this far from the sequence: relatives, not copies


def relatives(chains: list[str], n: int) -> list[list[str]]:
    """Up to ``n`` Swiss-Prot homologs of each sequence (jackhmmer, ``tttlab.data.homologs``, the
    aligned region, at ``IDENTITY`` to it over their residues in its columns, at least 30 residues,
    no X), in SHA-256 order (fixed, unrelated to the sequence), leaving out any similar to an
    evaluation protein (the pretraining filter's k-mer rule), so that no evaluation protein takes
    part in the choice."""
    from tttlab.data.homologs import homologs
    from tttlab.training.leakage import similar_to
    from tttlab.training.pretrain import evaluation_sequences

    found = [hash_order({h for h in homologs(s, "auto", identity=IDENTITY).sequences
                         if len(h) >= 30 and "X" not in h}) for s in chains]
    pool = sorted({h for f in found for h in f})
    flagged = similar_to(pool, list(evaluation_sequences(data_dir()).values())).any(axis=1)
    excluded = {h for h, bad in zip(pool, flagged) if bad}
    return [[h for h in candidates if h not in excluded][:n] for candidates in found]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chains", type=int, default=8)
    ap.add_argument("--min-len", type=int, default=80)
    ap.add_argument("--max-len", type=int, default=300)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-2, 4e-2, 1e-1, 2e-1, 4e-1, 8e-1])
    ap.add_argument("--accum", type=int, nargs="+", default=[4],
                    help="micro-batches of 4 copies per optimiser step (published: 16)")
    ap.add_argument("--homologs", type=int, default=3,
                    help="homologs per held-out sequence for the family drop (30-70 %% identity)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--model", default="tttlab-mini",
                    help="tttlab-mini (default) or a candidate .pt with its pretraining .json beside it")
    ap.add_argument("--json", help="write the rows to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        meta = pretraining_meta(args.model)
    except ValueError as err:
        ap.error(str(err))
    pool = heldout_chains(data_dir(), n=400, cfg=PretrainConfig.from_dict(meta["config"]))
    chains = [s for s in pool if args.min_len <= len(s) <= args.max_len][: args.chains]
    if not chains or min(args.steps, *args.accum) < 1 or min(args.lrs) <= 0:
        ap.error("need --chains >= 1 with held-out chains in the length range, --steps and "
                 "--accum >= 1, and --lrs > 0")
    model, _ = tttlab.load_model(args.model)
    before = [pseudo_perplexity(model, s) for s in chains]
    family = relatives(chains, args.homologs)
    family_before = [[pseudo_perplexity(model, h) for h in f] for f in family]
    print(json.dumps({"chains": len(chains), "homologs": [len(f) for f in family]}), flush=True)
    rows = []
    for accum, lr in itertools.product(args.accum, args.lrs):
        cfg = tttlab.preset("tttlab-mini", steps=args.steps, lr=lr, batch_size=4,
                            grad_accum_steps=accum)
        t0 = time.perf_counter()
        after, control, family_drops = [], [], []
        for i, s in enumerate(chains):
            other = (i + 1) % len(chains)
            with tttlab.customized(model, s, cfg, progress=False):
                after.append(pseudo_perplexity(model, s))
                if other != i:
                    control.append(pseudo_perplexity(model, chains[other]) / before[other] - 1)
                if family[i]:  # mean over the sequence's homologs: each sequence counts once
                    family_drops.append(statistics.mean(
                        1 - pseudo_perplexity(model, h) / b for h, b in zip(family[i],
                                                                          family_before[i])))
        drops = [1 - a / b for a, b in zip(after, before)]
        rows.append({"lr": lr, "rows_per_step": 4 * accum, "chains": len(chains),
                     "mean_relative_drop": round(sum(drops) / len(drops), 4),
                     "min_relative_drop": round(min(drops), 4),
                     "mean_family_drop": round(statistics.mean(family_drops), 4)
                     if family_drops else None,
                     "chains_with_homologs": len(family_drops),
                     "mean_control_rise": round(sum(control) / len(control), 4) if control
                     else None,
                     "geo_mean_before": round(math.exp(sum(map(math.log, before)) / len(before)), 3),
                     "geo_mean_after": round(math.exp(sum(map(math.log, after)) / len(after)), 3),
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
    if any(r["mean_family_drop"] is None for r in rows):
        raise SystemExit("no held-out sequence had homologs at 30-70 % identity: use more --chains")
    usable = [r for r in rows if math.isfinite(r["mean_family_drop"])]  # a diverged run is no choice
    if not usable:
        raise SystemExit("every setting diverged: use smaller --lrs")
    chosen = max(usable, key=lambda r: r["mean_family_drop"])
    if chosen["lr"] == max(r["lr"] for r in usable) and len(usable) > 1:
        print(json.dumps({"warning": "the largest family drop is at the top of the grid: "
                                     "extend --lrs upwards before trusting the choice"}))
    print(json.dumps({"chosen": {k: chosen[k] for k in ("lr", "rows_per_step")},
                      "rule": "largest mean_family_drop (homologs of each held-out sequence, "
                              "never trained on by TTT)"}))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "chosen": chosen}, fh, indent=1)


if __name__ == "__main__":
    main()
