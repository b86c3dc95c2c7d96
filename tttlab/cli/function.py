"""``tttlab function``: a localisation (or any label) head on embeddings before and after TTT."""

from __future__ import annotations

from pathlib import Path
import json

import pandas as pd

from tttlab.common.sequences import MAX_RESIDUES
from tttlab.studies.function import read_deeploc, read_tps, run_protocol, split, subsample

# ---------------------------------------------------------------------------------- CLI
def _fasta_path(name: str) -> Path:
    p = Path(name).expanduser()
    if p.is_file():
        return p
    from tttlab.data.registry import path as data_path

    return data_path(name)  # e.g. localization/setHARD.fasta under the shared data folder


def _cli(args) -> int:
    from tttlab.cli.options import CLIError, config_from_args
    from tttlab.engine.models import load_model

    if args.tps:
        train, test = split(read_tps())
    else:
        if not args.train or not args.test:
            raise CLIError("give --train FASTA (one or more) and --test FASTA, or --tps")
        train = pd.concat([read_deeploc(_fasta_path(f)) for f in args.train], ignore_index=True)
        test = read_deeploc(_fasta_path(args.test))
    for name, value in (("--max-train", args.max_train), ("--max-test", args.max_test)):
        if value is not None and value < 1:
            raise CLIError(f"{name} must be >= 1")
    train = subsample(train, args.max_train, args.seed)
    test = subsample(test, args.max_test, args.seed)
    cfg = config_from_args(args)
    if args.grad_accum is not None:
        if args.grad_accum < 1:
            raise CLIError("--grad-accum must be >= 1")
        from dataclasses import replace

        cfg = replace(cfg, grad_accum_steps=args.grad_accum)
    model, _ = load_model(args.model, device=args.device)
    result = run_protocol(model, train, test, cfg, layer=args.layer, max_length=args.max_length,
                          seed=args.seed, cache=not args.no_cache, progress=not args.json,
                          homologs=args.homologs)
    summary = result.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"head trained on {summary['n_train']} proteins, tested on {summary['n_test']}")
        print(result.metrics.round(3).to_string())
        print(f"correct {summary['correct_before']} -> {summary['correct_after']}; "
              f"{summary['changed']} predictions changed ({summary['fixed']} fixed, "
              f"{summary['broken']} broken); Spearman of the change in "
              f"p(true class) with pseudo-perplexity before TTT: "
              f"{summary['spearman_delta_p_true_vs_ppl_before']}")
        print(f"({summary['seconds']:.0f} s)")
    return 0


def register_cli(subparsers) -> None:
    """``tttlab function``: the head-before/after-TTT protocol on DeepLoc-style FASTA files."""
    from tttlab.cli.options import add_homolog_args, add_model_args

    p = subparsers.add_parser(
        "function", help="localisation head on embeddings before and after per-protein TTT",
        description="Train a logistic-regression head on base-model embeddings of --train, then "
        "score --test with base embeddings and with embeddings after TTT on each test protein. "
        "FASTA headers: 'ACCESSION Location-M|S|U [set]' (DeepLoc). Paths may be relative to "
        "the shared data folder, e.g. localization/setHARD.fasta.")
    p.add_argument("--train", action="append", metavar="FASTA", help="training FASTA (repeatable)")
    p.add_argument("--test", metavar="FASTA", help="test FASTA")
    p.add_argument("--tps", action="store_true",
                   help="terpene synthase types (sesq/mono/tri/di, seeded 80/20 split) instead")
    p.add_argument("--max-train", type=int, help="seeded subset of the training proteins")
    p.add_argument("--max-test", type=int, help="seeded subset of the test proteins")
    p.add_argument("--layer", type=int, default=-1, help="representation layer (-1 = last)")
    p.add_argument("--max-length", type=int, default=MAX_RESIDUES,
                   help="embed the first N residues (default 1022, the ESM-2 limit)")
    p.add_argument("--grad-accum", type=int, metavar="N",
                   help="micro-batches (of batch_size masked copies) per TTT step, gradients "
                   "summed (default: the model's preset; tttlab-mini 4, ESM-2 35M 16)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    add_model_args(p)
    add_homolog_args(p, per_protein=True)
    p.set_defaults(func=_cli)
