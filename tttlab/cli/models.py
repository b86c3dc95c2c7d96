"""``tttlab models``: the bundled tttlab-mini and the ESM-2 sizes, their TTT presets, estimated GPU
memory and where their weights are (expected) on this machine."""

from __future__ import annotations

import json


def _models(args) -> int:
    from tttlab.engine.config import PRESET_SOURCES, preset
    from tttlab.engine.models import ESM2_NAMES, MINI_NAME, MINI_PATH, hub_paths
    from tttlab.engine.sizes import memory_estimate
    from tttlab.training.pretrain import pretraining_meta

    def row(name, weights, source, shape=None):
        cfg = preset(name)
        out = memory_estimate(name, cfg, tokens=args.tokens, shape=shape)
        out.update(lr=cfg.lr, batch_size=cfg.batch_size, grad_accum_steps=cfg.grad_accum_steps,
                   loss=cfg.loss, preset=source, weights=str(weights),
                   downloaded=weights.is_file())
        return out

    mini = pretraining_meta(MINI_NAME)["config"]
    rows = [row(MINI_NAME, MINI_PATH, PRESET_SOURCES[MINI_NAME] + "; bundled, offline",
                (mini["num_layers"], mini["embed_dim"], mini["attention_heads"]))]
    rows += [row(name, hub_paths(name)[0], PRESET_SOURCES[name]) for name in ESM2_NAMES]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"{'model':<22}{'params':>8}{'shape':>13}  {'TTT preset':<42}{'GPU GiB: score':>15}"
          f"{'TTT':>6}  source")
    for r in rows:
        shape = f"{r['layers']}x{r['width']}/{r['heads']}"
        ttt = (f"lr {r['lr']:.1e} {r['batch_size']}x{r['grad_accum_steps']} "
               f"{'LoRA' if r['trainable'] == 'lora' else 'all weights'}, "
               f"{'masked' if r['loss'] == 'masked_tokens' else 'all-token'} CE")
        size = f"{r['parameters'] / 1e6:.0f}" if r["parameters"] >= 1e7 else \
            f"{r['parameters'] / 1e6:.1f}"
        print(f"{r['model']:<22}{size:>7}M{shape:>13}  {ttt:<42}"
              f"{r['scoring_gib']:>15.1f}{r['ttt_gib']:>6.1f}  {r['preset']}")
    print(f"\nGPU memory: estimates from the model shape for {args.tokens}-token inputs (fp32 weights,"
          " bf16 autocast; CUDA's ~0.5 GiB context on top); scoring grows its batches into free"
          " memory.\nWeights are read from (or downloaded to) "
          f"{hub_paths(ESM2_NAMES[0])[0].parent}; "
          f"{sum(r['downloaded'] for r in rows[1:])} of {len(rows) - 1} are there.\n"
          "ESMFold (tttlab fold): esmfold_v1 from the Hugging Face cache, its language model ESM-2 3B "
          "(head from esm2_t36_3B_UR50D), preset esmfold_v1: the 3B row's recipe, 30 steps, step "
          "kept by mean pLDDT.")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("models", help="tttlab-mini and the ESM-2 sizes: TTT presets, memory, "
                                             "weight files")
    p.add_argument("--tokens", type=int, default=1024, help="input length for the memory estimate")
    p.add_argument("--json", action="store_true", help="one JSON object per model")
    p.set_defaults(func=_models)
