"""Where a pretraining run stands: its validation curve and the v2 issue's three bars at every
checkpoint measured with ``benchmarks/v2_bars.py``, against training tokens, beside the previous
model (tttlab-mini v1) and the bars.

    python benchmarks/pretrain_progress.py --model data/models/esm2_tttlab_mini.pt \\
        [--bars benchmarks/results/v2_bars_step*.json] [--name pretrain_v2_progress]

Reads the checkpoint's ``.json`` (curve, unigram baseline) and the bar files (each with its
``weights``: step and tokens); writes ``figures/<name>.png``. Reference values of v1: its model
card (pfam40 0.94, DMS 0.016, contacts 0.056) and its validation perplexities on the v2 rows
(14.44, 17.34: ``training.pretrain.masked_perplexity``).
"""

import argparse
import glob
import json
from pathlib import Path

from tttlab.present.plots import pretraining_progress, save_figure, set_style
from tttlab.training.pretrain import pretraining_meta

V1 = {"val_masked_perplexity": 14.438, "val_mask_token_perplexity": 17.34, "pfam40_ratio": 0.94,
      "dms_spearman_mean": 0.016, "contacts_p_at_l_long_mean": 0.056}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a checkpoint with its pretraining .json")
    parser.add_argument("--bars", nargs="*", default=None,
                        help="v2_bars.py result files (default: benchmarks/results/v2_bars_*.json)")
    parser.add_argument("--name", default="pretrain_v2_progress")
    args = parser.parse_args(argv)
    try:
        meta = pretraining_meta(args.model)
    except ValueError as err:
        parser.error(str(err))
    files = args.bars if args.bars is not None else sorted(
        glob.glob("benchmarks/results/v2_bars_*.json"))
    checkpoints = [json.loads(Path(f).read_text()) for f in files]
    checkpoints = [c for c in checkpoints if "weights" in c]
    set_style()
    fig = pretraining_progress(meta["history"], checkpoints, meta["unigram_val_perplexity"],
                               V1, checkpoints[0]["bars"] if checkpoints else None)
    print(save_figure(fig, args.name))


if __name__ == "__main__":
    main()
