"""The full 490-protein setHARD run of ``tttlab function``, resumable and shared between processes.

On 2 CPU cores TTT on every setHARD protein with tttlab-mini takes about 15-19 core-hours (0.23 s
per residue per core on an AMD EPYC, 0.31 s on an Intel Xeon), longer than one working session.
This script fills an embedding cache (the library's own format and keys) with each test protein's
base pseudo-perplexity and its embedding after TTT, protein by protein in the seeded order of
``--max-test K``, so that the finished prefix is always a valid subset. Start one worker per core;
stop them any time; restart them to go on. Workers share the proteins through claim files
(``<cache>/claims``); a killed worker leaves its claim behind, so delete that folder when no worker
runs.

    python benchmarks/sethard_full_run.py work &     # one per core (1 torch thread each)
    python benchmarks/sethard_full_run.py status     # proteins done, seeded prefix, residues left
    python benchmarks/sethard_full_run.py pack       # finished entries -> entries.npz + manifest

The cache defaults to ``benchmarks/results/sethard_full`` (kept in git, so no session loses it);
the numbers then come from the unchanged command, which reads the entries and computes the rest
(the base embeddings):

    TTTLAB_CACHE_DIR=benchmarks/results/sethard_full tttlab function \\
        --train localization/deeploc_our_val_set.fasta --test localization/setHARD.fasta \\
        --ttt-steps 30 --json [--max-test K]

Cache keys hash the model weights, the sequence and the TTT config: with another model or config
nothing is read and everything is recomputed. Delete the folder to recompute from scratch.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = ROOT / "benchmarks" / "results" / "sethard_full"
TRAIN = "localization/deeploc_our_val_set.fasta"
TEST = "localization/setHARD.fasta"


def cli_args(model: str, steps: int, seed: int):
    """The parsed arguments of the ``tttlab function`` command this run stands for."""
    from tttlab.cli.main import build_parser

    return build_parser().parse_args(["function", "--train", TRAIN, "--test", TEST, "--model",
                                      model, "--ttt-steps", str(steps), "--seed", str(seed)])


def seeded_order(seed: int):
    """setHARD in the order ``subsample(test, K, seed)`` draws: every prefix is a ``--max-test``."""
    from tttlab.cli.function import _fasta_path
    from tttlab.studies.function import read_deeploc

    test = read_deeploc(_fasta_path(TEST))
    return test.sample(n=len(test), random_state=seed).reset_index(drop=True)


def entry_keys(model, order, cfg, seed: int):
    """Cache keys of each protein's TTT entry and base pseudo-perplexity entry."""
    from tttlab.common.sequences import MAX_RESIDUES, clean_sequence
    from tttlab.engine.scoring import max_residues
    from tttlab.studies.embeddings import model_fingerprint, ppl_key, ttt_key

    fingerprint = model_fingerprint(model)
    out = []
    for seq in order["sequence"]:
        seq = clean_sequence(seq)
        crop = seq[: min(MAX_RESIDUES, max_residues(model))]
        out.append((ttt_key(fingerprint, seq, crop, model.num_layers, "mean", cfg, 64, seed),
                    ppl_key(fingerprint, crop, 64, seed)))
    return out


def setup(args):
    import torch

    from tttlab.cli.options import config_from_args
    from tttlab.engine.models import load_model

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    cache = Path(args.cache) / "embeddings"
    command = cli_args(args.model, args.ttt_steps, args.seed)
    cfg = config_from_args(command)
    model, _ = load_model(args.model, device=args.device)
    order = seeded_order(args.seed)
    return model, order, cfg, cache


def work(args) -> int:
    from tttlab.studies.embeddings import embed_after_ttt, has_entry, pseudo_perplexities

    model, order, cfg, cache = setup(args)
    claims = cache.parent / "claims"
    claims.mkdir(parents=True, exist_ok=True)
    me = f"{socket.gethostname()}:{os.getpid()}"
    keys = entry_keys(model, order, cfg, args.seed)
    done = 0
    for i, (ttt, ppl) in enumerate(keys):
        if has_entry(ttt, cache) and has_entry(ppl, cache):
            continue
        claim = claims / ttt
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue  # another worker has it
        os.write(fd, me.encode())
        os.close(fd)
        row = order.iloc[i]
        start = time.perf_counter()
        pseudo_perplexities(model, [row["sequence"]], cache=cache, progress=False)
        embed_after_ttt(model, [row["sequence"]], cfg, seed=args.seed, cache=cache,
                        progress=False)
        claim.unlink(missing_ok=True)
        done += 1
        print(f"[{me}] #{i} {row['id']} L={row['length']} {time.perf_counter() - start:.0f} s",
              flush=True)
        if args.max_proteins and done >= args.max_proteins:
            break
    return 0


def status(args) -> int:
    from tttlab.common.sequences import MAX_RESIDUES
    from tttlab.studies.embeddings import has_entry

    model, order, cfg, cache = setup(args)
    have = np.array([has_entry(t, cache) and has_entry(p, cache)
                     for t, p in entry_keys(model, order, cfg, args.seed)])
    prefix = int(np.argmin(have)) if not have.all() else len(have)
    residues = np.minimum(order["length"].to_numpy(), MAX_RESIDUES)
    print(f"{have.sum()}/{len(have)} proteins done; seeded prefix {prefix} "
          f"(--max-test {prefix}); {int(residues[~have].sum()):,} of {int(residues.sum()):,} "
          f"residues (cropped to {MAX_RESIDUES}) left")
    return 0


def pack(args) -> int:
    """Gather the finished proteins' entries into one compressed ``entries.npz`` with a
    ``manifest.json`` (model file hash, TTT settings, per-protein keys), then delete the
    per-entry files it now holds: what is kept in git."""
    import hashlib
    from dataclasses import asdict

    from tttlab.engine.models import MINI_PATH
    from tttlab.studies.embeddings import _path, has_entry, model_fingerprint, pack_entries

    model, order, cfg, cache = setup(args)
    keys = entry_keys(model, order, cfg, args.seed)
    proteins = {row["id"]: {"ttt": t, "ppl": p} for (t, p), (_, row) in zip(keys, order.iterrows())
                if has_entry(t, cache) and has_entry(p, cache)}
    model_file = MINI_PATH if args.model == "tttlab-mini" else Path(args.model)
    manifest = {
        "command": f"TTTLAB_CACHE_DIR={args.cache} tttlab function --train {TRAIN} --test {TEST} "
                   f"--model {args.model} --ttt-steps {args.ttt_steps} --seed {args.seed}",
        "model": args.model,
        "model_file_sha256": hashlib.sha256(model_file.read_bytes()).hexdigest()
        if model_file.is_file() else None,
        "model_fingerprint": model_fingerprint(model), "ttt": asdict(cfg), "seed": args.seed,
        "entries": "per protein: 'ttt' = embedding after TTT (+ losses, pseudo-perplexity after), "
                   "'ppl' = sampled pseudo-perplexity before TTT (64 positions)",
        "proteins": proteins}
    flat = [k for pair in proteins.values() for k in (pair["ttt"], pair["ppl"])]
    path = pack_entries(cache, flat, manifest)
    for key in flat:
        _path(key, cache).unlink(missing_ok=True)
    print(f"{len(proteins)} proteins ({len(flat)} entries) in {os.path.relpath(path)}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("action", choices=("work", "status", "pack"))
    ap.add_argument("--cache", default=os.environ.get("TTTLAB_CACHE_DIR") or DEFAULT_CACHE,
                    help="cache root (entries go to CACHE/embeddings); default %(default)s")
    ap.add_argument("--model", default="tttlab-mini")
    ap.add_argument("--device", default=None)
    ap.add_argument("--ttt-steps", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker (0 = all)")
    ap.add_argument("--max-proteins", type=int, default=0, help="stop after N proteins (0 = all)")
    args = ap.parse_args(argv)
    return {"work": work, "status": status, "pack": pack}[args.action](args)


if __name__ == "__main__":
    sys.exit(main())
