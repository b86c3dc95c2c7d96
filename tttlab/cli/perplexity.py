"""``tttlab perplexity``: pseudo-perplexity of one or more proteins before and after TTT."""

from __future__ import annotations

import json
import time

from tttlab.cli.options import add_homolog_args, add_model_args, config_from_args, read_sequences


def _perplexity(args) -> int:
    from tttlab.data.homologs import homologs as homologs_of
    from tttlab.engine.models import load_model
    from tttlab.engine.scoring import pseudo_perplexity
    from tttlab.engine.ttt import customized

    records = read_sequences(args.sequence, args.fasta)
    cfg = config_from_args(args)
    model, _ = load_model(args.model, device=args.device)
    for name, seq in records:
        start = time.perf_counter()
        before = pseudo_perplexity(model, seq)
        family = (None if args.homologs is None
                  else homologs_of(seq, args.homologs, cfg.homolog_region))
        with customized(model, seq, cfg, progress=not args.json, homologs=family):
            after = pseudo_perplexity(model, seq) if cfg.steps else before
        row = {"id": name, "length": len(seq), "pseudo_perplexity_before": round(before, 4),
               "pseudo_perplexity_after": round(after, 4),
               "n_homologs": len(family) if family is not None else 0,
               "homolog_source": family.source if family is not None else None,
               "seconds": round(time.perf_counter() - start, 2)}
        if args.json:
            print(json.dumps(row), flush=True)
        else:
            print(f"{name}\tL={len(seq)}\tpseudo-perplexity {before:.3f} -> {after:.3f}"
                  f"\t({row['seconds']:.1f} s)", flush=True)
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("perplexity", help="pseudo-perplexity before and after TTT")
    p.add_argument("sequence", nargs="?", help="a protein sequence (one-letter codes)")
    p.add_argument("--fasta", help="FASTA file with one or more sequences")
    add_model_args(p)
    add_homolog_args(p)
    p.set_defaults(func=_perplexity)
