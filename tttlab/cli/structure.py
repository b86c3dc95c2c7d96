"""``tttlab contacts`` and ``tttlab structure fit-head | benchmark | probe``: the structure case study."""

from __future__ import annotations

from pathlib import Path
import json

from tttlab.data.structures import PFAM40_TEST, load_target, pfam40_path
from tttlab.studies.contact_head import fit_head_command, regression_path
from tttlab.studies.structure import evaluate_ss_probe, evaluate_structure, fit_ss_probe, secondary_structure_chains


def _contacts_cli(args) -> int:
    from tttlab.cli.options import config_from_args
    from tttlab.engine.models import load_model

    targets = [load_target(p, args.chain) for p in args.pdb]  # fail fast, before loading a model
    cfg = config_from_args(args)
    if str(args.model).endswith(".pt") and not regression_path(args.model).is_file():
        raise ValueError(f"{args.model}: no contact regression beside it; fit one with "
                         f"`tttlab structure fit-head --model {args.model}`")
    model, _ = load_model(args.model, device=args.device)
    for target in targets:
        row = evaluate_structure(model, target, cfg=cfg, progress=not args.json,
                                 homologs=args.homologs)
        if args.json:
            print(json.dumps({k: (None if v != v else round(v, 4)) if isinstance(v, float) else v
                              for k, v in row.items()}), flush=True)
        else:
            print(f"{row['id']}\tL={row['length']}\tlong-range P@L "
                  f"{row['precision_at_L_long_before']:.3f} -> "
                  f"{row['precision_at_L_long_after']:.3f}\t({row['seconds']:.1f} s)", flush=True)
    return 0


def register_cli(subparsers) -> None:
    """``tttlab contacts --pdb FILE [--chain A] [--model M] [--ttt-steps N] [--json]``."""
    from tttlab.cli.options import add_homolog_args, add_model_args

    p = subparsers.add_parser("contacts", help="contact precision before and after TTT",
                              description="Top-L contact precision of one or more PDB chains "
                              "(or DMS ids from dms_structure_map.csv) before and after TTT.")
    p.add_argument("--pdb", nargs="+", required=True, metavar="FILE",
                   help="PDB file(s), or DMS ids such as SPG1_STRSG_Olson_2014_singles")
    p.add_argument("--chain", default=None, help="chain id (default: first protein chain)")
    add_model_args(p)
    add_homolog_args(p)
    p.set_defaults(func=_contacts_cli)
    _structure_parser(subparsers)


def _run_table(evaluate, items: dict, csv=None, resume: bool = False):
    """Rows of ``evaluate(item)`` for ``items`` (``{id: (set, item)}``), written to ``csv`` after
    every row; with ``resume``, ids already in ``csv`` are kept and skipped."""
    import pandas as pd
    from tqdm.auto import tqdm

    rows = []
    if resume and csv and Path(csv).is_file():
        rows = [r for r in pd.read_csv(csv).to_dict("records") if r["id"] in items]
    done = {r["id"] for r in rows}
    for key, (label, item) in tqdm(items.items(), desc="proteins"):
        if key in done:
            continue
        rows.append({"set": label, **evaluate(item)})
        if csv:
            pd.DataFrame(rows).to_csv(csv, index=False)
    return pd.DataFrame(rows)


def _structure_parser(subparsers) -> None:
    """``tttlab structure fit-head | benchmark | probe`` (see ``--help``)."""
    parser = subparsers.add_parser("structure", help="fit the contact head; pfam40 contact "
                                   "benchmark; secondary-structure probe")
    sub = parser.add_subparsers(dest="structure_command", required=True)
    p = sub.add_parser("fit-head", help="fit the contact regression on the pfam40 TRAIN split")
    p.add_argument("--model", default="tttlab-mini")
    p.add_argument("--out", default=None, help="default: <model stem>-contact-regression.pt")
    p.add_argument("--C", type=float, default=0.1, help="inverse L1 strength (default 0.1)")
    b = sub.add_parser("benchmark", help="contact precision on the pfam40 TEST split (+ DMS)")
    b.add_argument("--dms", nargs="*", default=[], help="DMS ids to add")
    q = sub.add_parser("probe", help="secondary-structure probe: Q3 before/after TTT")
    q.add_argument("--n-train", type=int, default=300, help="FLIP train chains (<= 400 aa)")
    q.add_argument("--n-test", type=int, default=20, help="FLIP test chains")
    q.add_argument("--max-length", type=int, default=150, help="longest test chain")
    for x in (b, q):
        x.add_argument("--model", default="tttlab-mini")
        x.add_argument("--ttt-steps", type=int, default=30)
        x.add_argument("--csv", default=None, help="write the per-protein table here")
        x.add_argument("--resume", action="store_true", help="keep and skip rows already in --csv")
    parser.set_defaults(func=_structure_cli)


def _structure_cli(args) -> int:
    from tttlab.engine.config import preset
    from tttlab.engine.models import load_model

    if args.structure_command == "fit-head":
        print(json.dumps(fit_head_command(args.model, args.out, args.C)))
        return 0
    model, _ = load_model(args.model)
    cfg = preset(args.model, steps=args.ttt_steps)
    if args.structure_command == "benchmark":
        items = {n: ("pfam40-test", pfam40_path(n)) for n in PFAM40_TEST}
        items.update({d: ("dms", d) for d in args.dms})
        df = _run_table(lambda item: evaluate_structure(model, item, cfg=cfg, progress=False),
                        items, args.csv, args.resume)
        cols = [c for c in df.columns if c.startswith("precision_at")]
    else:
        probe = fit_ss_probe(model, secondary_structure_chains("train", args.n_train, 400))
        chains = secondary_structure_chains("test", args.n_test, args.max_length)
        df = _run_table(lambda chain: evaluate_ss_probe(model, probe, [chain], cfg, False)
                        .iloc[0].to_dict(), {c[0]: ("flip-ss-test", c) for c in chains},
                        args.csv, args.resume)
        cols = ["q3_before", "q3_after"]
    print(df.round(3).to_string(index=False))
    for name, group in df.groupby("set", sort=False):
        print(json.dumps({"set": name, "n": len(group), "ttt_steps": cfg.steps,
                          "mean": group[cols].mean().round(4).to_dict()}))
    return 0

