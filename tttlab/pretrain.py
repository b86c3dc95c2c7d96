"""Pretraining of ``tttlab-mini``: a small ESM-2 (fair-esm ``ESM2``, ESM-1b alphabet) trained with the
ESM-2 masked-language-model objective on real PDB chains (FLIP), after a leakage filter that removes every
chain resembling an evaluation protein of this project. Resumable: ``python -m tttlab.pretrain``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .data import read_fasta
from .masking import STANDARD_AA, bert_mask
from .models import MINI_PATH, build_esm2, save_fair_esm_checkpoint


@dataclass(frozen=True)
class PretrainConfig:
    """Hyper-parameters of the tttlab-mini run (defaults = the shipped model)."""

    num_layers: int = 5
    embed_dim: int = 192
    attention_heads: int = 12
    crop: int = 254  # residues; + BOS/EOS = 256 tokens
    tokens_per_batch: int = 8192  # padded tokens per optimiser step
    steps: int = 5000
    peak_lr: float = 2e-3
    warmup_steps: int = 300
    final_lr_fraction: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    val_every: int = 250
    ckpt_every: int = 125
    n_val_chains: int = 400
    kmer_exact: int = 20  # any shared exact k-mer removes a training chain
    kmer_homology: int = 12  # ... and so do >= homology_hits shared k-mers of this length
    homology_hits: int = 3
    seed: int = 0


# ------------------------------------------------------------------------------------ data
def pdb_sequence(path) -> str:
    """One-letter sequence of the first chain's standard residues in a PDB file (via biotite)."""
    import biotite.sequence as bseq
    import biotite.structure as struc
    import biotite.structure.io.pdb as pdb

    atoms = pdb.PDBFile.read(str(path)).get_structure(model=1)
    atoms = atoms[struc.filter_amino_acids(atoms)]
    out = []
    for name in struc.get_residues(atoms)[1]:
        try:
            out.append(bseq.ProteinSequence.convert_letter_3to1(name))
        except KeyError:
            out.append("X")
    return "".join(out)


def evaluation_sequences(data_dir: Path) -> dict[str, list[str]]:
    """Every protein the project evaluates on, grouped by source."""
    groups: dict[str, list[str]] = {}
    groups["dms wild types"] = [s for f in sorted((data_dir / "dms").glob("*.wt.fasta"))
                                for _, s in read_fasta(f)]
    groups["structures"] = [pdb_sequence(f) for sub in ("pfam40", "dms_targets")
                            for f in sorted((data_dir / "structures" / sub).glob("*.pdb"))]
    groups["localisation test"] = [s for name in ("deeploc_test_set.fasta", "setHARD.fasta")
                                   for _, s in read_fasta(data_dir / "localization" / name)]
    import csv

    with open(data_dir / "terpene_synthases" / "tps_proteins.csv") as handle:
        groups["terpene synthases"] = [row["sequence"] for row in csv.DictReader(handle)]
    ss = read_fasta(data_dir / "sequences" / "flip_secondary_structure" / "sampled.fasta.gz")
    test_ids = {h.split()[0] for h, _ in ss if "SET=test" in h}
    seqs = read_fasta(data_dir / "sequences" / "flip_secondary_structure" / "sequences.fasta.gz")
    groups["secondary-structure test chains"] = [s for h, s in seqs if h.split()[0] in test_ids]
    return groups


def _kmers(seq: str, k: int) -> set[str]:
    return {seq[i:i + k] for i in range(len(seq) - k + 1)}


def training_chains(data_dir: Path, cfg: PretrainConfig):
    """Deduplicated FLIP chains minus leakage; returns (train, val, report)."""
    pool: dict[str, str] = {}
    for sub in ("flip_secondary_structure", "flip_conservation"):
        for header, seq in read_fasta(data_dir / "sequences" / sub / "sequences.fasta.gz"):
            pool.setdefault(seq.upper(), header.split()[0])
    # DeepLoc's validation split: real UniProt proteins (cytosolic, membrane, secreted ...) that only
    # ever train the localisation head, never evaluate; they add what PDB chains lack
    for header, seq in read_fasta(data_dir / "localization" / "deeploc_our_val_set.fasta"):
        pool.setdefault(seq.upper(), header.split()[0])
    report = {"chains_read_unique": len(pool)}
    standard = set(STANDARD_AA)
    chains = {s: h for s, h in pool.items() if len(s) >= 30 and set(s) <= standard | {"X"}}
    report["removed_short_or_nonstandard"] = len(pool) - len(chains)
    for source, seqs in evaluation_sequences(data_dir).items():
        exact = set().union(*(_kmers(s, cfg.kmer_exact) for s in seqs))
        homol = set().union(*(_kmers(s, cfg.kmer_homology) for s in seqs))
        keep = {}
        for s, h in chains.items():
            if any(s[i:i + cfg.kmer_exact] in exact for i in range(len(s) - cfg.kmer_exact + 1)):
                continue
            hits = sum(s[i:i + cfg.kmer_homology] in homol
                       for i in range(len(s) - cfg.kmer_homology + 1))
            if hits >= cfg.homology_hits:
                continue
            keep[s] = h
        report[f"removed_by_{source.replace(' ', '_')}"] = len(chains) - len(keep)
        chains = keep
    val = [s for s in chains if int(hashlib.sha1(s.encode()).hexdigest(), 16) % 20 == 0]
    train = [s for s in chains if int(hashlib.sha1(s.encode()).hexdigest(), 16) % 20 != 0]
    report.update(train_chains=len(train), val_chains=len(val),
                  train_residues=sum(map(len, train)), val_residues=sum(map(len, val)))
    return sorted(train), sorted(val), report


def unigram_perplexity(train: list[str], val: list[str]) -> float:
    """Perplexity of the amino-acid frequency model (fitted on ``train``) on ``val`` residues."""
    counts = torch.zeros(26)
    for s in train:
        counts += torch.bincount(torch.tensor([ord(c) - 65 for c in s]), minlength=26).float()
    logp = torch.log(counts.clamp(min=1) / counts.sum())
    idx = torch.tensor([ord(c) - 65 for s in val for c in s])
    return float(torch.exp(-logp[idx].mean()))


# ----------------------------------------------------------------------------- batches
def _encode(seq, alphabet) -> torch.Tensor:
    return torch.tensor([alphabet.get_idx(c) for c in seq], dtype=torch.uint8)


def make_batches(lengths: list[int], cfg: PretrainConfig, generator) -> list[list[int]]:
    """Length-bucketed batches under a padded-token budget, in a random order."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    order.sort(key=lambda i: min(lengths[i], cfg.crop))  # stable: random within equal lengths
    batches, current, longest = [], [], 0
    for i in order:
        size = min(lengths[i], cfg.crop) + 2
        if current and max(longest, size) * (len(current) + 1) > cfg.tokens_per_batch:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, size)
    if current:
        batches.append(current)
    perm = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in perm]


def collate(encoded: list[torch.Tensor], alphabet, crop: int, generator) -> torch.Tensor:
    """BOS + random crop + EOS, padded to the longest row."""
    rows = []
    for seq in encoded:
        if len(seq) > crop:
            start = int(torch.randint(len(seq) - crop + 1, (1,), generator=generator))
            seq = seq[start:start + crop]
        rows.append(seq.long())
    width = max(len(r) for r in rows) + 2
    tokens = torch.full((len(rows), width), alphabet.padding_idx, dtype=torch.long)
    for j, r in enumerate(rows):
        tokens[j, 0] = alphabet.cls_idx
        tokens[j, 1:len(r) + 1] = r
        tokens[j, len(r) + 1] = alphabet.eos_idx
    return tokens


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``final_lr_fraction`` of the peak."""
    if step < cfg.warmup_steps:
        return cfg.peak_lr * (step + 1) / cfg.warmup_steps
    t = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.peak_lr * (cfg.final_lr_fraction + (1 - cfg.final_lr_fraction)
                          * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def masked_perplexity(model, alphabet, seqs: list[str], crop: int, seed: int = 1234) -> float:
    """exp(mean cross-entropy on 15 % BERT-masked residues) with a fixed mask: the validation curve."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for i in range(0, len(seqs), 32):
        tokens = collate([_encode(s, alphabet) for s in seqs[i:i + 32]], alphabet, crop, gen)
        corrupted, selected = bert_mask(tokens, alphabet, gen)
        logits = model(corrupted)["logits"]
        total += float(F.cross_entropy(logits[selected], tokens[selected], reduction="sum"))
        count += int(selected.sum())
    return math.exp(total / count)


# ------------------------------------------------------------------------------- training
def pretrain(data_dir: Path, run_dir: Path, cfg: PretrainConfig = PretrainConfig(),
             export: Path = MINI_PATH, progress: bool = True) -> dict:
    """Run (or resume) pretraining; checkpoints to ``run_dir``, exports fair-esm files to ``export``."""
    from tqdm.auto import tqdm

    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "ckpt.pt"
    data_path = run_dir / "data.json"
    if data_path.is_file():
        data = json.loads(data_path.read_text())
    else:
        train, val, report = training_chains(data_dir, cfg)
        data = {"train": train, "val": val, "report": report,
                "unigram_val_perplexity": unigram_perplexity(train, val)}
        data_path.write_text(json.dumps(data))
    print(json.dumps(data["report"]), "unigram val perplexity %.3f" % data["unigram_val_perplexity"])

    model, alphabet = build_esm2(cfg.num_layers, cfg.embed_dim, cfg.attention_heads, seed=cfg.seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.peak_lr, betas=(0.9, 0.98), eps=1e-8)
    state = {"step": 0, "tokens": 0, "seconds": 0.0, "history": []}
    if ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        state = ck["state"]
        print(f"resumed at step {state['step']}")
    encoded = [_encode(s, alphabet) for s in data["train"]]
    lengths = [len(s) for s in data["train"]]
    val = data["val"][: cfg.n_val_chains]

    def save():
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "state": state,
                    "cfg": asdict(cfg)}, tmp)
        os.replace(tmp, ckpt_path)
        save_fair_esm_checkpoint(model, export)
        (run_dir / "history.json").write_text(json.dumps(state["history"], indent=1))

    model.train()
    bar = tqdm(total=cfg.steps, initial=state["step"], disable=not progress, desc="pretrain")
    epoch, epoch_start = 0, 0
    epoch_batches = make_batches(lengths, cfg, torch.Generator().manual_seed(cfg.seed * 1000))
    while state["step"] < cfg.steps:
        step = state["step"]
        while step - epoch_start >= len(epoch_batches):  # also fast-forwards on resume
            epoch_start += len(epoch_batches)
            epoch += 1
            epoch_batches = make_batches(lengths, cfg,
                                         torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
        batch = epoch_batches[step - epoch_start]
        gen = torch.Generator().manual_seed(cfg.seed * 10_000_019 + step)
        t0 = time.perf_counter()
        tokens = collate([encoded[i] for i in batch], alphabet, cfg.crop, gen)
        corrupted, selected = bert_mask(tokens, alphabet, gen)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        logits = model(corrupted)["logits"]
        loss = F.cross_entropy(logits[selected], tokens[selected])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        state["step"] += 1
        state["tokens"] += int((tokens != alphabet.padding_idx).sum())
        state["seconds"] += time.perf_counter() - t0
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr_at(step, cfg):.1e}")
        if state["step"] % cfg.val_every == 0 or state["step"] == cfg.steps:
            ppl = masked_perplexity(model, alphabet, val, cfg.crop)
            model.train()
            state["history"].append({"step": state["step"], "tokens": state["tokens"],
                                     "seconds": round(state["seconds"], 1),
                                     "train_loss": round(loss.item(), 4),
                                     "val_masked_perplexity": round(ppl, 4)})
            print(json.dumps(state["history"][-1]), flush=True)
        if state["step"] % cfg.ckpt_every == 0 or state["step"] == cfg.steps:
            save()
    bar.close()
    model.eval()
    return {"report": data["report"], "unigram_val_perplexity": data["unigram_val_perplexity"],
            "history": state["history"]}


def unigram_log_probs(seqs: list[str]) -> dict[str, float]:
    """log frequency of each standard amino acid in ``seqs`` (the unigram baseline model)."""
    counts = {a: 1 for a in STANDARD_AA}
    for s in seqs:
        for c in s:
            if c in counts:
                counts[c] += 1
    total = sum(counts.values())
    return {a: math.log(n / total) for a, n in counts.items()}


def heldout_chains(data_dir: Path, n: int = 50, max_len: int = 0) -> list[str]:
    """Validation chains by the run's fixed hash rule (sha1 % 20 == 0), sorted, first ``n``.

    They were never trained on: either held out, or removed by the leakage filter."""
    seqs = set()
    for sub in ("flip_secondary_structure", "flip_conservation"):
        for _, s in read_fasta(data_dir / "sequences" / sub / "sequences.fasta.gz"):
            s = s.upper()
            if len(s) >= 30 and set(s) <= set(STANDARD_AA) and \
                    int(hashlib.sha1(s.encode()).hexdigest(), 16) % 20 == 0:
                seqs.add(s)
    out = sorted(seqs)[:n]
    return [s[:max_len] for s in out] if max_len else out


def evaluate_pretrained(model, data_dir: Path, unigram: dict[str, float], n_heldout: int = 50,
                        progress: bool = True) -> dict:
    """Pseudo-perplexity of ``model`` vs the unigram baseline on held-out chains and on pfam40."""
    from tqdm.auto import tqdm

    from .scoring import pseudo_perplexity

    sets = {"heldout": heldout_chains(data_dir, n_heldout),
            "pfam40": [pdb_sequence(f) for f in sorted((data_dir / "structures" / "pfam40")
                                                       .glob("*.pdb"))]}
    out = {}
    for name, seqs in sets.items():
        seqs = [s.replace("X", "") for s in seqs]
        model_nll, base_nll, n = 0.0, 0.0, 0
        for s in tqdm(seqs, desc=name, disable=not progress):
            model_nll += math.log(pseudo_perplexity(model, s)) * len(s)
            base_nll -= sum(unigram[c] for c in s)
            n += len(s)
        out[name] = {"proteins": len(seqs), "residues": n,
                     "pseudo_perplexity": round(math.exp(model_nll / n), 3),
                     "unigram_perplexity": round(math.exp(base_nll / n), 3)}
        out[name]["reduction"] = round(1 - out[name]["pseudo_perplexity"]
                                       / out[name]["unigram_perplexity"], 4)
    return out


def _run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir) if args.data_dir else None
    if data_dir is None:
        from .data import data_dir as default_dir

        data_dir = default_dir()
    if args.evaluate:
        from .models import load_model

        model, _ = load_model(args.export, device="cpu")
        meta = json.loads(Path(args.export).with_suffix(".json").read_text())
        print(json.dumps(evaluate_pretrained(model, data_dir, meta["unigram_log_probs"]), indent=1))
        return 0
    cfg = PretrainConfig(steps=args.steps)
    out = pretrain(data_dir, Path(args.run_dir), cfg, Path(args.export))
    data = json.loads((Path(args.run_dir) / "data.json").read_text())
    meta = {"config": asdict(cfg), "filter_report": out["report"],
            "unigram_val_perplexity": out["unigram_val_perplexity"],
            "unigram_log_probs": unigram_log_probs(data["train"]), "history": out["history"]}
    Path(args.export).with_suffix(".json").write_text(json.dumps(meta, indent=1))
    print(json.dumps(out["history"][-1] if out["history"] else {}))
    return 0


def _add_arguments(parser):
    parser.add_argument("--data-dir", default=None, help="shared data folder (default: registry)")
    parser.add_argument("--run-dir", default="runs/pretrain", help="checkpoints (resumable)")
    parser.add_argument("--export", default=str(MINI_PATH), help="fair-esm .pt to write")
    parser.add_argument("--steps", type=int, default=PretrainConfig.steps)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--evaluate", action="store_true",
                        help="only measure pseudo-perplexity vs the unigram baseline")


def register_cli(subparsers) -> None:
    """``tttlab pretrain``: (re)build tttlab-mini, resumably, or ``--evaluate`` it."""
    p = subparsers.add_parser("pretrain", help="pretrain tttlab-mini (hours on a CPU; resumable)")
    _add_arguments(p)
    p.set_defaults(func=_run)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Pretrain tttlab-mini (resumable).")
    _add_arguments(parser)
    return _run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
