"""``tttlab fitness``: zero-shot DMS fitness prediction before and after TTT."""

from __future__ import annotations

import json

from tttlab.data.dms import load_dms
from tttlab.studies.fitness import evaluate_assay

# --------------------------------------------------------------------------------- CLI
def _cli(args) -> int:
    from tttlab.cli.options import config_from_args
    from tttlab.engine.models import load_model

    if args.max_variants is not None and args.max_variants < 1:
        raise ValueError("--max-variants must be >= 1")
    assay = load_dms(args.dms, args.wt_fasta, drop_invalid=args.drop_invalid)
    cfg = config_from_args(args)
    model, _ = load_model(args.model, device=args.device)
    out = evaluate_assay(model, assay, cfg=cfg, method=args.method, max_variants=args.max_variants,
                         seed=args.seed, progress=not args.json, homologs=args.homologs)
    out["model"] = str(args.model)
    if args.json:
        print(json.dumps(out), flush=True)
        return 0
    print(f"{out['assay']}: {out['n_variants']} of {out['n_variants_total']} variants scored "
          f"({out['n_dropped']} rows dropped), method {out['method']}, {cfg.steps} TTT steps")
    for when in ("before", "after"):
        lo, hi = out[f"spearman_{when}_ci"]
        print(f"  {when:6s} TTT: Spearman {out[f'spearman_{when}']:.3f} [{lo:.3f}, {hi:.3f}]  "
              f"NDCG@10% {out[f'ndcg_{when}']:.3f}  pseudo-perplexity "
              f"{out[f'pseudo_perplexity_{when}']:.2f}")
    if out["n_homologs"]:
        print(f"  TTT on the wild type and {out['n_homologs']} homologs ({out['homolog_source']})")
    print(f"  ({out['seconds']:.1f} s)")
    return 0


def register_cli(subparsers) -> None:
    """``tttlab fitness --dms FILE.csv[.gz] ...``"""
    from tttlab.cli.options import add_homolog_args, add_model_args
    from tttlab.engine.scoring import METHODS

    p = subparsers.add_parser("fitness", help="zero-shot DMS fitness prediction before/after TTT")
    p.add_argument("--dms", required=True, help="ProteinGym-format DMS .csv[.gz] or a shared id")
    p.add_argument("--wt-fasta", help="wild-type FASTA (default: inferred from mutated_sequence)")
    p.add_argument("--method", choices=METHODS, default="masked_marginals")
    p.add_argument("--max-variants", type=int, help="score a fixed-seed subsample of K variants")
    p.add_argument("--drop-invalid", action="store_true",
                   help="drop invalid rows instead of stopping with an error")
    add_model_args(p)
    add_homolog_args(p)
    p.set_defaults(func=_cli)
