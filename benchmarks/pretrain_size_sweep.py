"""Size sweep of tttlab-mini v2: validation curves of the short runs (one per model size, same data,
same schedule), as a figure and a JSON summary.

    python benchmarks/pretrain_size_sweep.py [--runs runs] [--reference-ppl 14.4382]

Reads ``RUNS/pretrain_v2_{s,m,l}/history.json`` (written by ``tttlab pretrain --size X``) and
``RUNS/corpus_v2/corpus_report.json``; writes ``figures/pretrain_v2_size_sweep.png`` and
``benchmarks/results/pretrain_v2_size_sweep.json``.
"""

import argparse
import json
from pathlib import Path

from tttlab.present.plots import save_figure, set_style, size_sweep_curves
from tttlab.training.pretrain import SIZES


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs")
    parser.add_argument("--reference-ppl", type=float, default=None,
                        help="tttlab-mini v1 on the same validation rows (dotted line)")
    args = parser.parse_args()
    runs = Path(args.runs)
    report = json.loads((runs / "corpus_v2" / "corpus_report.json").read_text())
    curves, summary = {}, {}
    for size, (layers, width, heads) in SIZES.items():
        path = runs / f"pretrain_v2_{size}" / "history.json"
        if not path.is_file():
            continue
        history = json.loads(path.read_text())
        config = json.loads((path.parent / "config.json").read_text())
        label = f"{size}: {layers} x {width}"
        curves[label] = history
        last = history[-1]
        summary[size] = {"layers": layers, "embed_dim": width, "heads": heads,
                         "steps": last["step"], "tokens": last["tokens"],
                         "tokens_per_wall_second": round(last["tokens"] / last["seconds"]),
                         "tokens_per_cpu_second": round(last["tokens"] / last["cpu_seconds"]),
                         "val_masked_perplexity": last["val_masked_perplexity"],
                         "curve": [(h["tokens"], h["val_masked_perplexity"]) for h in history],
                         "config": config}
    set_style()
    reference = {"tttlab-mini v1": args.reference_ppl} if args.reference_ppl else None
    fig = size_sweep_curves(curves, report["unigram_val_perplexity"], reference)
    print(save_figure(fig, "pretrain_v2_size_sweep"))
    out = Path("benchmarks/results/pretrain_v2_size_sweep.json")
    out.write_text(json.dumps({"unigram_val_perplexity": report["unigram_val_perplexity"],
                               "v1_val_masked_perplexity": args.reference_ppl, "runs": summary},
                              indent=1))
    print(out)


if __name__ == "__main__":
    main()
