"""``tttlab sweep fitness | contacts``: a case study over many proteins on Dask."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tttlab.present.plots import save_sweep_plot
from tttlab.studies.sweep import SUMMARY_NAME, sweep_contacts, sweep_fitness

# --------------------------------------------------------------------------------- CLI
def _add_sweep_args(p) -> None:
    from tttlab.cli.options import add_homolog_args, add_model_args

    p.add_argument("--out", required=True, help="output folder (one JSON per task, summary.csv)")
    add_model_args(p)
    add_homolog_args(p, per_protein=True)
    p.add_argument("--only", nargs="+", default=None, metavar="ID",
                   help="run only these inputs (file names without suffix)")
    p.add_argument("--limit", type=int, default=None, help="only the first N inputs by name")
    p.add_argument("--scheduler", default=None,
                   help="address of a running Dask scheduler, e.g. tcp://host:8786 "
                        "(default: a LocalCluster on this machine)")
    p.add_argument("--workers", type=int, default=None,
                   help="LocalCluster worker processes (default: one per core)")
    p.add_argument("--gpu", action="store_true",
                   help="tasks need resources={'GPU': 1}: one task at a time per GPU worker")
    p.add_argument("--no-retry-failed", dest="retry_failed", action="store_false",
                   help="keep earlier errors instead of rerunning failed tasks")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--no-plot", action="store_true", help="skip the summary figure")


def _report(table: pd.DataFrame, out, as_json: bool) -> int:
    """Print the sweep table; exit status 1 when any task failed (the others still finished)."""
    failed = int((table["status"] != "ok").sum())
    if as_json:
        print(table.to_json(orient="records"))
    else:
        with pd.option_context("display.width", 160, "display.max_columns", 12):
            print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"{len(table) - failed} finished, {failed} failed; {table.attrs['submitted']} run "
              f"now; summary: {Path(out) / SUMMARY_NAME}")
    return 1 if failed else 0


def _check(args) -> None:
    if args.workers is not None and args.workers < 1:
        raise ValueError("--workers must be >= 1")
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be >= 1")
    if args.ttt_steps < 0:
        raise ValueError("--ttt-steps must be >= 0")


def _sweep(args, run, inputs, extra: dict, helper: str, figure: str) -> int:
    """Check the options, run the sweep ``run(inputs, out, ...)``, save its figure
    (``plots.<helper>`` as ``OUT/<figure>.png``) unless ``--no-plot``, report."""
    _check(args)
    table = run(inputs, args.out, model=args.model, ttt_steps=args.ttt_steps, seed=args.seed,
                device=args.device, only=args.only, limit=args.limit, scheduler=args.scheduler,
                workers=args.workers, gpu=args.gpu, retry_failed=args.retry_failed,
                progress=args.progress and not args.json, homologs=args.homologs,
                homolog_region=args.homolog_region, **extra)
    if not args.no_plot:
        save_sweep_plot(table, args.out, helper, figure)
    return _report(table, args.out, args.json)


def _cli_fitness(args) -> int:  # Spearman change against pseudo-perplexity
    return _sweep(args, sweep_fitness, args.dms_dir,
                  {"max_variants": args.max_variants, "method": args.method},
                  "delta_spearman_plot", "delta_spearman_vs_perplexity")


def _cli_contacts(args) -> int:  # long-range precision at L before vs after TTT
    return _sweep(args, sweep_contacts, args.pdb_dir, {}, "before_after", "contacts_before_after")


def register_cli(subparsers) -> None:
    """``tttlab sweep fitness ...`` and ``tttlab sweep contacts ...``."""
    sweep = subparsers.add_parser("sweep", help="run a case study over many proteins on Dask")
    sub = sweep.add_subparsers(dest="sweep", required=True)
    p = sub.add_parser("fitness", help="DMS Spearman before/after TTT, one task per assay")
    p.add_argument("--dms-dir", required=True,
                   help="folder of <name>.csv[.gz] assays with <name>.wt.fasta beside them")
    p.add_argument("--max-variants", type=int, default=None,
                   help="random subsample of variants per assay (default: all)")
    p.add_argument("--method", default="masked_marginals",
                   choices=("masked_marginals", "wt_marginals", "pseudo_likelihood"))
    _add_sweep_args(p)
    p.set_defaults(func=_cli_fitness)
    p = sub.add_parser("contacts", help="contact precision before/after TTT, one task per PDB")
    p.add_argument("--pdb-dir", required=True, help="folder of .pdb / .cif files")
    _add_sweep_args(p)
    p.set_defaults(func=_cli_contacts)
