"""Where a step's time goes: the torch profiler over one TTT micro-batch (the published 35M recipe's
4 masked copies of TEM-1, loss over every token) and one pretraining chunk (8 x 512 tokens, masked
loss), forward and backward on one thread, grouped into matrix products, fused attention, GELU,
layer norms, copies/rotary and the rest.

    python benchmarks/profile_step.py [--ttt-shape mini|8M] [--pretrain-size s|m|l]

Prints one table per step and one JSON line. Run it on an otherwise idle machine.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tttlab  # noqa: E402
from bench_engine import get_model  # noqa: E402
from tttlab.data.fasta import read_fasta  # noqa: E402
from tttlab.data.registry import path as data_path  # noqa: E402
from tttlab.engine import ttt  # noqa: E402
from tttlab.engine.masking import bert_mask  # noqa: E402
from tttlab.engine.models import build_esm2  # noqa: E402
from tttlab.engine.scoring import encode  # noqa: E402
from tttlab.training.pretrain import SIZES, _chunk_loss, bert_init  # noqa: E402

SHAPES = {"mini": "tttlab-mini", "8M": "esm2-8M-arch"}
GROUPS = (("linear-layer matrix products", ("aten::mm", "aten::addmm", "aten::bmm")),
          ("fused attention, forward + backward", ("flash_attention",)),
          ("GELU, forward + backward", ("gelu",)),
          ("layer norms, forward + backward", ("layer_norm",)),
          ("copies, concatenations, rotary", ("aten::copy_", "aten::cat", "aten::mul", "aten::roll",
                                              "aten::clone")))


def grouped(prof) -> dict[str, float]:
    """Self CPU time fraction per group (ops matched by name), the rest as 'other'."""
    rows = prof.key_averages()
    total = sum(r.self_cpu_time_total for r in rows)
    out = {name: 0.0 for name, _ in GROUPS} | {"other": 0.0}
    for r in rows:
        group = next((name for name, keys in GROUPS
                      if r.key in keys or any(k in r.key for k in keys if not k.startswith("aten::"))),
                     "other")
        out[group] += r.self_cpu_time_total / total
    out["total_ms"] = total / 1e3
    return out


def profiled(fn) -> dict[str, float]:
    fn()  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return grouped(prof)


def ttt_micro_batch(shape: str):
    model = get_model(SHAPES[shape], torch.device("cpu"))
    seq = read_fasta(data_path("dms/BLAT_ECOLX_Stiffler_2015.wt.fasta"))[0][1]
    cfg = tttlab.preset(batch_size=4, grad_accum_steps=1, lr=4e-4, loss="all_tokens")
    tokens = encode(model.alphabet, seq, torch.device("cpu"))
    params = ttt._select_trainable(model, cfg)
    model.train()
    losses = ttt._micro_batch_losses(model, tokens, cfg, cfg.batch_size,
                                     torch.Generator().manual_seed(0))
    return lambda: ttt._summed(params, losses)


def pretrain_chunk(size: str):
    model, alphabet = build_esm2(*SIZES[size])
    bert_init(model)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, 24, (8, 512), generator=gen)
    tokens[:, 0], tokens[:, -1] = alphabet.cls_idx, alphabet.eos_idx
    corrupted, selected = bert_mask(tokens, alphabet, gen)

    def run():
        loss = _chunk_loss(model, tokens, corrupted, selected, int(selected.sum()))
        torch.autograd.grad(loss, params, allow_unused=True)
    return run


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ttt-shape", default="8M", choices=sorted(SHAPES))
    parser.add_argument("--pretrain-size", default="m", choices=sorted(SIZES))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = {f"ttt_micro_batch_{args.ttt_shape}": profiled(ttt_micro_batch(args.ttt_shape)),
           f"pretrain_chunk_{args.pretrain_size}": profiled(pretrain_chunk(args.pretrain_size))}
    for step, groups in out.items():
        print(f"\n{step} ({groups['total_ms']:.0f} ms, one thread)")
        for name, share in groups.items():
            if name != "total_ms":
                print(f"  {name:<40} {100 * share:5.1f} %")
    print(json.dumps({k: {g: round(v, 4) for g, v in d.items()} for k, d in out.items()}))
    return out


if __name__ == "__main__":
    main()
