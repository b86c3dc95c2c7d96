"""tttlab's TTT side by side with the published ProteinTTT code, in one run on this machine.

    python benchmarks/bench_proteinttt.py --proteinttt PATH [--json OUT.json]

PATH is a checkout of https://github.com/anton-bushuiev/ProteinTTT (measured at commit fb33da6;
its own requirements, e.g. ``pip install omegaconf biopython pandas``, must be importable). Nothing of
ProteinTTT is vendored here: without PATH the benchmark says so and exits 0.

What is compared, for each model shape (the bundled tttlab-mini's weights and a random ESM-2 8M
architecture, the same weights in both libraries):

* the whole user-facing call: ``with tttlab.customized(model, seq, cfg): pass`` from entry to exit,
  against ProteinTTT's ``model.ttt(seq)`` followed by ``model.ttt_reset()``;
* the published ESM-2 35M recipe in both: SGD lr 4e-4, 4 masked copies x 16 accumulated
  micro-batches per step, cross-entropy over every token, 15 % BERT masking, ``--steps`` steps, no
  scoring during training; TEM-1 (286 residues);
* after one warm-up run each, ``--repeats`` runs of each library alternated (ours, theirs, ours,
  ...); whole-run medians (and min/max) on the process CPU clock (all threads; the default) and on
  the wall clock, per-step medians from each library's own step timer (wall), and the final loss.

The step's fraction of the matmul peak uses the step's own matrix shapes: every linear layer's
forward, input-gradient and weight-gradient product and the attention products, each timed with
``torch.mm`` / ``torch.bmm`` on this machine; the time all of them would take at those rates is
divided by the measured engine step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import tttlab  # noqa: E402
from bench_engine import (get_model, machine, spread, step_flops, step_shape_peak,  # noqa: E402
                          stock_model, ttt_batches)
from tttlab.engine import scoring, ttt  # noqa: E402

SHAPES = {"mini": "tttlab-mini", "8M": "esm2-8M-arch"}
CLOCKS = {"process": time.process_time, "wall": time.perf_counter}


# ------------------------------------------------------------------------- ProteinTTT
def import_proteinttt(path: Path):
    """ProteinTTT's ``ESM2TTT`` and ``TTTConfig`` from the checkout at ``path``, and its commit."""
    sys.path.insert(0, str(path))
    from proteinttt.base import TTTConfig as PTTTConfig
    from proteinttt.models.esm2 import ESM2TTT

    try:
        commit = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown (not a git checkout)"
    return ESM2TTT, PTTTConfig, commit


def proteinttt_model(ESM2TTT, PTTTConfig, model, cfg: tttlab.TTTConfig, steps: int):
    """ProteinTTT's ESM2TTT holding ``model``'s weights, set to ``cfg``'s recipe, built the
    documented way (``ttt_from_pretrained`` on a stock fair-esm ESM2)."""
    pcfg = PTTTConfig(lr=cfg.lr, batch_size=cfg.batch_size, ags=cfg.grad_accum_steps, steps=steps,
                      mask_ratio=cfg.mask_ratio, crop_size=cfg.crop_size,
                      bert_leave_prob=cfg.bert_keep, bert_replace_prob=cfg.bert_replace,
                      loss_kind="unnormalized_cross_entropy", seed=cfg.seed,
                      logger_level="WARNING")
    return ESM2TTT.ttt_from_pretrained(
        stock_model(model), ttt_cfg=pcfg, num_layers=model.num_layers, embed_dim=model.embed_dim,
        attention_heads=model.attention_heads, alphabet=model.alphabet,
        token_dropout=model.token_dropout).eval()


# ------------------------------------------------------------------------------ timing
def run_tttlab(model, seq, cfg, steps):
    marks = []  # right after step 0 and after every optimiser step
    t0 = {k: c() for k, c in CLOCKS.items()}
    with ttt.customized(model, seq, cfg, progress=False, steps=steps,
                        callback=lambda step, m: marks.append(time.perf_counter())) as result:
        loss = result.history[-1]["loss"]
    took = {k: c() - t0[k] for k, c in CLOCKS.items()}
    return took, [b - a for a, b in zip(marks, marks[1:])], loss


def run_proteinttt(pmodel, seq):
    t0 = {k: c() for k, c in CLOCKS.items()}
    out = pmodel.ttt(seq)
    pmodel.ttt_reset()
    took = {k: c() - t0[k] for k, c in CLOCKS.items()}
    df = out["df"]
    return took, list(df["ttt_step_time"].iloc[1:]), float(df["loss"].iloc[-1])


# -------------------------------------------------------------------------------- main
def bench_shape(name, seq, args, ESM2TTT, PTTTConfig) -> dict:
    model = get_model(SHAPES[name], torch.device("cpu"))
    cfg = tttlab.preset(batch_size=4, grad_accum_steps=16, lr=4e-4, loss="all_tokens",
                        eval_every=0, keep_best=False)
    pmodel = proteinttt_model(ESM2TTT, PTTTConfig, model, cfg, args.steps)
    tokens = scoring.encode(model.alphabet, seq)[None]
    with torch.no_grad():  # same weights: both libraries' models give the same logits
        same = float((model(tokens)["logits"] - pmodel(tokens)["logits"]).abs().max())
    run_tttlab(model, seq, cfg, 1)  # warm-up: one step each
    pmodel.ttt_cfg.steps = 1
    run_proteinttt(pmodel, seq)
    pmodel.ttt_cfg.steps = args.steps
    ours, theirs = [], []
    for _ in range(args.repeats):
        ours.append(run_tttlab(model, seq, cfg, args.steps))
        theirs.append(run_proteinttt(pmodel, seq))
    out = {"layers": model.num_layers, "dim": model.embed_dim, "heads": model.attention_heads,
           "parameters": sum(p.numel() for p in model.parameters()),
           "initial_logits_max_abs_diff": same}
    for label, runs in (("tttlab", ours), ("proteinttt", theirs)):
        out[label] = {f"whole_run_{k}_s": spread([r[0][k] for r in runs]) for k in CLOCKS}
        out[label]["step_wall_s"] = spread([s for r in runs for s in r[1]])
        out[label]["final_loss"] = spread([r[2] for r in runs])
    for k in CLOCKS:
        out[f"speedup_whole_run_{k}"] = (out["proteinttt"][f"whole_run_{k}_s"]["median"]
                                         / out["tttlab"][f"whole_run_{k}_s"]["median"])
    out["speedup_step_wall"] = (out["proteinttt"]["step_wall_s"]["median"]
                                / out["tttlab"]["step_wall_s"]["median"])
    batches = ttt_batches(model, seq, cfg, 1)
    flops = step_flops(stock_model(model), batches, cfg)
    peak = step_shape_peak(model, cfg.batch_size, len(seq) + 2, cfg.grad_accum_steps)
    step = out["tttlab"]["step_wall_s"]["median"]
    out["step"] = {"gflop_counted": flops / 1e9, "tttlab_gflops": flops / step / 1e9,
                   "matmul_peak_on_step_shapes": peak,
                   "tttlab_fraction_of_matmul_peak": peak["seconds_per_step"] / step,
                   "proteinttt_fraction_of_matmul_peak":
                       peak["seconds_per_step"] / out["proteinttt"]["step_wall_s"]["median"]}
    return out


def run(args) -> dict:
    from tttlab.data import path, read_fasta

    ESM2TTT, PTTTConfig, commit = import_proteinttt(args.proteinttt)
    seq = read_fasta(path("dms/BLAT_ECOLX_Stiffler_2015.wt.fasta"))[0][1]
    if args.quick:
        seq = seq[:40]
    start = time.perf_counter()
    result = {"command": "python benchmarks/bench_proteinttt.py " + " ".join(args.argv),
              "machine": machine(torch.device("cpu")), "proteinttt_commit": commit,
              "protein": f"TEM-1 (BLAT_ECOLX), {len(seq)} aa",
              "recipe": "SGD lr 4e-4, 4 copies x 16 micro-batches per step, cross-entropy over "
                        f"every token, {args.steps} steps, seed 0",
              "timing": f"one warm-up run each, then {args.repeats} runs alternated; medians",
              "shapes": {}}
    for name in args.shapes:
        result["shapes"][name] = bench_shape(name, seq, args, ESM2TTT, PTTTConfig)
    result["targets_met"] = {f"{name}: whole-run speedup (process clock) >= 1.5":
                             r["speedup_whole_run_process"] >= 1.5
                             for name, r in result["shapes"].items()}
    result["wall_seconds"] = time.perf_counter() - start
    return result


def table(r: dict) -> str:
    lines = [f"ProteinTTT {r['proteinttt_commit'][:7]} vs tttlab, {r['protein']}; {r['recipe']}; "
             f"{r['machine']['cpu']}, {r['machine']['torch_threads']} threads", "",
             "| shape | whole run, process s: tttlab / ProteinTTT | speedup | wall speedup | "
             "step wall s: tttlab / ProteinTTT | step speedup | tttlab % of matmul peak |",
             "|" + "---|" * 7]
    for name, s in r["shapes"].items():
        a, b = s["tttlab"], s["proteinttt"]
        lines.append(
            f"| {name} | {a['whole_run_process_s']['median']:.1f} / "
            f"{b['whole_run_process_s']['median']:.1f} | {s['speedup_whole_run_process']:.2f} | "
            f"{s['speedup_whole_run_wall']:.2f} | {a['step_wall_s']['median']:.2f} / "
            f"{b['step_wall_s']['median']:.2f} | {s['speedup_step_wall']:.2f} | "
            f"{100 * s['step']['tttlab_fraction_of_matmul_peak']:.0f} |")
    return "\n".join(lines + ["", f"{r['wall_seconds']:.0f} s"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proteinttt", type=Path, default=None,
                        help="a checkout of github.com/anton-bushuiev/ProteinTTT")
    parser.add_argument("--shapes", default="mini,8M", help="comma-separated: mini, 8M")
    parser.add_argument("--steps", type=int, default=5, help="optimiser steps per run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each library")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="40 residues: smoke test")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.proteinttt is None or not (args.proteinttt / "proteinttt").is_dir():
        print(f"skipped: no ProteinTTT checkout at {args.proteinttt} (clone "
              "https://github.com/anton-bushuiev/ProteinTTT and pass --proteinttt PATH)")
        return None
    try:
        import_proteinttt(args.proteinttt)
    except ImportError as err:
        print(f"skipped: ProteinTTT at {args.proteinttt} cannot be imported ({err}); install its own "
              "requirements, e.g. pip install omegaconf biopython pandas")
        return None
    torch.set_num_threads(args.threads)
    args.shapes = [s for s in args.shapes.split(",") if s]
    result = run(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    return result


if __name__ == "__main__":
    main()
