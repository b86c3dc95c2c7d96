"""The three bars of the tttlab-mini v2 issue, for any candidate checkpoint (before TTT):

1. pseudo-perplexity on the 40 pfam40 domains against the unigram baseline (bar: ratio <= 0.85);
2. mean zero-shot Spearman (masked marginals, up to 2,000 variants each) over the 12 shared DMS assays
   (bar: >= 0.10; beside it on the same variants BLOSUM62 and the composition-only null,
   ``fitness.unigram_scores`` with the checkpoint's training-corpus frequencies);
3. long-range contact precision at L on the 20 pfam40 TEST domains, with the contact head fitted on
   the 20 TRAIN domains for this checkpoint (bar: >= 0.10).

    python benchmarks/v2_bars.py --model data/models/v2/esm2_tttlab_mini_v2.pt [--json OUT]

The unigram baseline comes from the checkpoint's ``.json`` (``unigram_log_probs``, the training
corpus's amino-acid frequencies, as ``tttlab pretrain --evaluate`` uses). Nothing is written into the
repository; the contact head is fitted in memory. Hours of CPU on two cores with a run in training
beside it; minutes on a GPU.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tttlab.data import registry  # noqa: E402
from tttlab.data.structures import PFAM40_TEST, PFAM40_TRAIN, load_target, pfam40_path  # noqa: E402
from tttlab.engine.config import preset  # noqa: E402
from tttlab.engine.models import load_model  # noqa: E402
from tttlab.studies.contact_head import fit_contact_head  # noqa: E402
from tttlab.data.dms import load_dms  # noqa: E402
from tttlab.studies.fitness import evaluate_assay, spearman, unigram_scores  # noqa: E402
from tttlab.studies.structure import contact_precisions, predict_contacts  # noqa: E402
from tttlab.studies.sweep import find_assays  # noqa: E402
from tttlab.training.pretrain import evaluate_pretrained, pretraining_meta  # noqa: E402

BARS = {"pfam40_ratio_max": 0.85, "dms_spearman_min": 0.10, "contacts_p_at_l_long_min": 0.10}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a tttlab-mini checkpoint with its .json")
    parser.add_argument("--max-variants", type=int, default=2000)
    parser.add_argument("--parts", default="pfam40,dms,contacts",
                        help="which bars to measure (comma-separated)")
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args(argv)
    data_dir = registry.data_dir()
    try:
        meta = pretraining_meta(args.model)
        # the contact bar fits its own head: a regression file beside the checkpoint is not read
        model, _ = load_model(args.model, device="cpu", contact_regression=False)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    out, start = {"model": args.model, "bars": BARS}, time.perf_counter()
    if "weights" in meta:  # where the checkpoint stands in its run (step, tokens, seconds)
        out["weights"] = meta["weights"]

    parts, out["passed"] = set(args.parts.split(",")), {}
    if "pfam40" in parts:
        ppl = evaluate_pretrained(model, data_dir, meta["unigram_log_probs"], n_heldout=0)
        out["pseudo_perplexity"] = ppl
        out["pfam40_ratio"] = (ppl["pfam40"]["pseudo_perplexity"]
                               / ppl["pfam40"]["unigram_perplexity"])
        out["passed"]["pfam40"] = out["pfam40_ratio"] <= BARS["pfam40_ratio_max"]
        print(json.dumps({"pseudo_perplexity": ppl}), flush=True)
    if "dms" in parts:
        cfg = preset("tttlab-mini", steps=0)
        out["dms"] = {}
        for assay, path in find_assays(data_dir / "dms"):
            loaded = load_dms(path)
            r = evaluate_assay(model, loaded, cfg=cfg, max_variants=args.max_variants,
                               progress=False)
            variants = loaded.subsample(args.max_variants, 0).table  # the ones evaluate_assay drew
            out["dms"][assay] = {"spearman": r["spearman_before"],
                                 "spearman_blosum62": r["spearman_blosum62"],
                                 "spearman_unigram": round(spearman(variants.DMS_score, unigram_scores(
                                     variants.mutant, meta["unigram_log_probs"])), 4)}
        for key, column in (("dms_spearman_mean", "spearman"), ("dms_blosum62_mean",
                            "spearman_blosum62"), ("dms_unigram_mean", "spearman_unigram")):
            out[key] = statistics.mean(a[column] for a in out["dms"].values())
        out["passed"]["dms"] = out["dms_spearman_mean"] >= BARS["dms_spearman_min"]
        print(json.dumps({"dms_spearman_mean": out["dms_spearman_mean"],
                          "assays": len(out["dms"])}), flush=True)
    if "contacts" in parts:
        out["contact_head"] = fit_contact_head(model, [pfam40_path(n) for n in PFAM40_TRAIN],
                                               progress=False)
        precisions = {}
        for name in PFAM40_TEST:
            target = load_target(pfam40_path(name))
            precisions[name] = contact_precisions(predict_contacts(model, target.sequence),
                                                  target.contacts())["precision_at_L_long"]
        out["contacts_p_at_l_long"] = precisions
        out["contacts_p_at_l_long_mean"] = statistics.mean(precisions.values())
        out["passed"]["contacts"] = (out["contacts_p_at_l_long_mean"]
                                     >= BARS["contacts_p_at_l_long_min"])
    out["seconds"] = round(time.perf_counter() - start, 1)
    keys = ("pfam40_ratio", "dms_spearman_mean", "dms_blosum62_mean", "dms_unigram_mean",
            "contacts_p_at_l_long_mean",
            "passed", "seconds")
    print(json.dumps({k: out[k] for k in keys if k in out}))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
