"""``tttlab pretrain``: (re)build tttlab-mini, resumably; snapshot, leakage audit, evaluation."""

from __future__ import annotations

from pathlib import Path
import json

import torch

from tttlab.training.pretrain import (SIZES, PretrainConfig, _model_meta, check_leakage,
                                      evaluate_pretrained, export_snapshot, pretrain,
                                      pretraining_meta)


def _run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir) if args.data_dir else None
    if data_dir is None:
        from tttlab.data.registry import data_dir as default_dir

        data_dir = default_dir()
    if args.evaluate:
        from tttlab.engine.models import load_model

        meta = pretraining_meta(args.evaluate)
        model, _ = load_model(args.evaluate, device="cpu")
        result = evaluate_pretrained(model, data_dir, meta["unigram_log_probs"],
                                     n_heldout=args.heldout,
                                     config=PretrainConfig.from_dict(meta["config"]))
        print(json.dumps(result, indent=1))
        return 0
    if args.check_leakage:
        print(json.dumps(check_leakage(data_dir, Path(args.check_leakage)), indent=1))
        return 0
    if args.snapshot:
        print(json.dumps(export_snapshot(Path(args.run_dir), Path(args.snapshot))))
        return 0
    layers, width, heads = SIZES[args.size]
    cfg = PretrainConfig(num_layers=layers, embed_dim=width, attention_heads=heads,
                         steps=args.steps)
    run_dir = Path(args.run_dir)
    out = pretrain(data_dir, run_dir, cfg, args.export, max_seconds=args.max_minutes * 60,
                   init=args.init, bf16=args.bf16)
    export = Path(args.export) if args.export else run_dir / "esm2_tttlab_mini.pt"
    export.with_suffix(".json").write_text(json.dumps(_model_meta(cfg, out["report"],
                                                                  out["history"]), indent=1))
    print(json.dumps(out["history"][-1] if out["history"] else {}))
    return 0


def _add_arguments(parser):
    parser.add_argument("--data-dir", default=None, help="shared data folder (default: registry)")
    parser.add_argument("--run-dir", default="runs/pretrain_v2", help="checkpoints (resumable)")
    parser.add_argument("--export", default=None,
                        help="fair-esm .pt to write (default: RUN_DIR/esm2_tttlab_mini.pt)")
    parser.add_argument("--size", choices=sorted(SIZES), default="m",
                        help="model size: " + ", ".join(f"{k} = {v[0]} x {v[1]}"
                                                        for k, v in SIZES.items()))
    parser.add_argument("--steps", type=int, default=PretrainConfig.steps,
                        help="length of the learning-rate schedule")
    parser.add_argument("--max-minutes", type=float, default=0,
                        help="stop (resumably) after this many minutes of training")
    parser.add_argument("--init", default=None,
                        help="start a new run folder from exported weights (e.g. the committed "
                             "snapshot) with a fresh optimiser")
    parser.add_argument("--snapshot", default=None,
                        help="only export RUN_DIR's checkpoint as fp16 weights + .json to this "
                             "path (the copy to commit), then exit")
    parser.add_argument("--check-leakage", default=None, metavar="TRAIN_IDS",
                        help="audit a train_ids.txt.gz against every evaluation protein, then exit")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--bf16", action="store_true",
                        help="train under bfloat16 autocast (weights, optimiser, loss and "
                             "validation stay float32): faster on CPUs with bf16 instructions (AVX-512-BF16, "
                             "AMX) and on GPUs, slower elsewhere")
    parser.add_argument("--evaluate", nargs="?", const="tttlab-mini", default=None, metavar="PT",
                        help="only measure pseudo-perplexity vs the unigram baseline on held-out "
                             "sequences and the pfam40 domains, of PT (its .json beside it; "
                             "default: the bundled tttlab-mini), then exit")
    parser.add_argument("--heldout", type=int, default=50,
                        help="with --evaluate: how many validation sequences (default 50)")


def register_cli(subparsers) -> None:
    """``tttlab pretrain``: (re)build tttlab-mini, resumably, or ``--evaluate`` it."""
    p = subparsers.add_parser("pretrain", help="pretrain tttlab-mini (hours on a CPU; resumable)")
    _add_arguments(p)
    p.set_defaults(func=_run)


