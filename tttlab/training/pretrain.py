"""Pretraining of ``tttlab-mini``: a small ESM-2 (fair-esm ``ESM2``, ESM-1b alphabet) trained with the
ESM-2 masked-language-model objective on UniProtKB/Swiss-Prot 2014_01 and the FLIP PDB chains, after a
leakage filter (``tttlab.training.leakage``) that removes every sequence resembling an evaluation protein of
this project and every duplicate. Resumable from any stop: ``tttlab pretrain``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from tttlab.common.files import atomic_write
from tttlab.data.fasta import read_fasta
from tttlab.engine.masking import STANDARD_AA, bert_mask
from tttlab.engine.models import build_esm2, save_fair_esm_checkpoint
from tttlab.engine.ttt import accumulate_gradients, cpu_workers


@dataclass(frozen=True)
class PretrainConfig:
    """Hyper-parameters of a tttlab-mini pretraining run (ESM-2 objective and architecture)."""

    num_layers: int = 6
    embed_dim: int = 256
    attention_heads: int = 16
    crop: int = 510  # residues; + BOS/EOS = 512 tokens (long-range structure needs long crops)
    tokens_per_batch: int = 8192  # padded tokens per optimiser step (16 crops of 512)
    steps: int = 13000  # 106 M tokens: 14 h at 6 x 256 on 2 cores (2,132 tokens/s), the budget
    peak_lr: float = 1e-3
    warmup_steps: int = 200
    final_lr_fraction: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    val_every: int = 50
    ckpt_every: int = 25
    n_val_sequences: int = 300  # the first n of the validation set (sorted) give the curve
    min_length: int = 30
    val_modulus: int = 400  # a sequence is validation when sha1(sequence) % val_modulus == 0
    kmer_exact: int = 20  # any shared exact k-mer removes a training sequence
    kmer_homology: int = 12  # ... and so do >= homology_hits shared k-mers of this length
    homology_hits: int = 3
    seed: int = 0

    @classmethod
    def from_dict(cls, values: dict) -> "PretrainConfig":
        """The configuration a model's ``.json`` records (keys this version does not know are
        ignored, so older files still load)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    @property
    def tokens_planned(self) -> int:
        return self.steps * self.tokens_per_batch


#: the model sizes compared by the short runs (layers, width, heads; head size 16 as ESM-2 8M)
SIZES = {"s": (4, 192, 12), "m": (6, 256, 16), "l": (6, 320, 20)}


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


def family_queries(data_dir: Path) -> list[str]:
    """The query (first record, gaps removed, upper case) of each A3M/A2M alignment in ``families/``."""
    out = []
    for f in sorted((data_dir / "families").glob("*.a[23]m*")):
        opener = gzip.open if f.suffix == ".gz" else open
        with opener(f, "rt") as handle:
            lines = [next(handle)]
            for line in handle:
                if line.startswith(">"):
                    break
                lines.append(line.strip())
        out.append("".join(lines[1:]).replace("-", "").replace(".", "").upper())
    return out


def _flip_test_chains(data_dir: Path, subset: str) -> list[str]:
    labels = read_fasta(data_dir / "sequences" / subset / "sampled.fasta.gz")
    test_ids = {h.split()[0] for h, _ in labels if "SET=test" in h}
    seqs = read_fasta(data_dir / "sequences" / subset / "sequences.fasta.gz")
    return [s for h, s in seqs if h.split()[0] in test_ids]


def evaluation_sequences(data_dir: Path) -> dict[str, list[str]]:
    """Every protein the project evaluates on, grouped by source (the leakage filter's groups)."""
    import csv

    groups: dict[str, list[str]] = {}
    groups["dms wild types"] = [s for f in sorted((data_dir / "dms").glob("*.wt.fasta"))
                                for _, s in read_fasta(f)]
    groups["structures"] = [pdb_sequence(f) for sub in ("pfam40", "dms_targets")
                            for f in sorted((data_dir / "structures" / sub).glob("*.pdb"))]
    groups["family alignment queries"] = family_queries(data_dir)
    groups["localisation test"] = [s for name in ("deeploc_test_set.fasta", "setHARD.fasta")
                                   for _, s in read_fasta(data_dir / "localization" / name)]
    with open(data_dir / "terpene_synthases" / "tps_proteins.csv") as handle:
        groups["terpene synthases"] = [row["sequence"] for row in csv.DictReader(handle)]
    groups["secondary-structure test chains"] = _flip_test_chains(data_dir,
                                                                  "flip_secondary_structure")
    groups["conservation test chains"] = _flip_test_chains(data_dir, "flip_conservation")
    return groups


def _kmers(seq: str, k: int) -> set[str]:
    return {seq[i:i + k] for i in range(len(seq) - k + 1)}


def _is_val(seq: str, modulus: int) -> bool:
    return int(hashlib.sha1(seq.encode()).hexdigest(), 16) % modulus == 0


_CORPUS_LETTERS = frozenset(STANDARD_AA) | {"X"}


def _usable(seq: str, cfg: "PretrainConfig") -> bool:
    """Long enough and of the 20 amino acids and X only: the corpus keeps no other sequence."""
    return len(seq) >= cfg.min_length and set(seq) <= _CORPUS_LETTERS


def corpus_records(data_dir: Path) -> list[tuple[str, str]]:
    """(id, sequence) of the v2 corpus in reading order: Swiss-Prot 2014_01 (id = accession), then
    both FLIP sets (id = ``<set>/<chain>``: the two sets share 5,507 chain ids, 16 with other
    sequences, so a bare chain id would not name one record)."""
    records = [(h.split()[0], s) for h, s in read_fasta(
        data_dir / "sequences" / "swissprot_2014_01" / "swissprot_2014_01.fasta.gz")]
    for sub in ("flip_secondary_structure", "flip_conservation"):
        records += [(f"{sub}/{h.split()[0]}", s) for h, s in
                    read_fasta(data_dir / "sequences" / sub / "sequences.fasta.gz")]
    return records


def filter_corpus(records: list[tuple[str, str]], groups: dict[str, list[str]],
                  cfg: "PretrainConfig", progress: bool = True):
    """Deduplicate, drop short/odd sequences, remove everything similar to an evaluation group, pick
    the validation set (sha1 rule) and remove training sequences similar to it.

    Returns (train, val, report): train and val are lists of (id, sequence); report counts what each
    reason removed (each sequence is counted under the first reason that applies, in order)."""
    import numpy as np

    from tttlab.training.leakage import similar_to

    pool: dict[str, str] = {}
    for rid, seq in records:
        pool.setdefault(seq.upper(), rid)
    report = {"records_read": len(records), "unique_sequences": len(pool)}
    seqs = [s for s in pool if _usable(s, cfg)]
    report["removed_short_or_nonstandard"] = len(pool) - len(seqs)
    t0 = time.perf_counter()
    flags = similar_to(seqs, list(groups.values()), cfg.kmer_exact, cfg.kmer_homology,
                       cfg.homology_hits)
    removed = np.zeros(len(seqs), bool)
    for g, name in enumerate(groups):
        hit = flags[:, g] & ~removed
        report[f"removed_similar_to_{name.replace(' ', '_').replace('-', '_')}"] = int(hit.sum())
        removed |= hit
    seqs = [s for s, r in zip(seqs, removed) if not r]
    val = [s for s in seqs if _is_val(s, cfg.val_modulus)]
    rest = [s for s in seqs if not _is_val(s, cfg.val_modulus)]
    near_val = similar_to(rest, [val], cfg.kmer_exact, cfg.kmer_homology, cfg.homology_hits)[:, 0]
    report["removed_similar_to_validation_set"] = int(near_val.sum())
    train = [s for s, r in zip(rest, near_val) if not r]
    report["filter_seconds"] = round(time.perf_counter() - t0, 1)
    report.update(train_sequences=len(train), train_residues=sum(map(len, train)),
                  val_sequences=len(val), val_residues=sum(map(len, val)))
    return [(pool[s], s) for s in train], [(pool[s], s) for s in val], report


# ------------------------------------------------------------------------------ corpus
class Corpus:
    """Token rows stored as one ``uint8`` array of alphabet indices plus offsets (fast to reload)."""

    def __init__(self, tokens, offsets, ids):
        self.tokens, self.offsets, self.ids = tokens, offsets, ids
        self.lengths = (offsets[1:] - offsets[:-1]).tolist()

    def __len__(self):
        return len(self.ids)

    def row(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.tokens[self.offsets[i]:self.offsets[i + 1]])

    def sequences(self, alphabet, n: int | None = None) -> list[str]:
        letters = {alphabet.get_idx(c): c for c in STANDARD_AA + "X"}
        return ["".join(letters[int(t)] for t in self.row(i)) for i in range(len(self)
                                                                          if n is None else n)]

    @classmethod
    def encode(cls, records: list[tuple[str, str]], alphabet) -> "Corpus":
        import numpy as np

        lut = np.zeros(256, dtype=np.uint8)
        for c in STANDARD_AA + "X":
            lut[ord(c)] = alphabet.get_idx(c)
        joined = "".join(s for _, s in records).encode("ascii")
        offsets = np.zeros(len(records) + 1, dtype=np.int64)
        np.cumsum([len(s) for _, s in records], out=offsets[1:])
        return cls(lut[np.frombuffer(joined, dtype=np.uint8)], offsets, [r for r, _ in records])

    def save(self, path: Path) -> None:
        import numpy as np

        atomic_write(path, lambda handle: np.savez(handle, tokens=self.tokens,
                                                   offsets=self.offsets, ids=np.array(self.ids)))

    @classmethod
    def load(cls, path: Path) -> "Corpus":
        import numpy as np

        with np.load(path) as z:
            return cls(z["tokens"], z["offsets"], z["ids"].tolist())


_FILTER_FIELDS = ("min_length", "val_modulus", "kmer_exact", "kmer_homology", "homology_hits")


def prepare_corpus(data_dir: Path, corpus_dir: Path, cfg: PretrainConfig, alphabet) -> dict:
    """Build (once) the filtered corpus in ``corpus_dir``: train/val arrays, report, train id list.

    Runs of several model sizes share one corpus folder; one built with other filter settings is
    refused."""
    corpus_dir.mkdir(parents=True, exist_ok=True)
    run_dir = corpus_dir
    report_path = run_dir / "corpus_report.json"
    wanted = {k: getattr(cfg, k) for k in _FILTER_FIELDS}
    if report_path.is_file():
        report = json.loads(report_path.read_text())
        if report["filter_settings"] != wanted:
            raise ValueError(f"{corpus_dir} was filtered with {report['filter_settings']}, "
                             f"not {wanted}; use another corpus folder")
        return report
    print("reading and filtering the corpus (minutes) ...", flush=True)
    train, val, report = filter_corpus(corpus_records(data_dir), evaluation_sequences(data_dir), cfg)
    train.sort(key=lambda r: r[1])
    val.sort(key=lambda r: r[1])
    Corpus.encode(train, alphabet).save(run_dir / "train.npz")
    Corpus.encode(val, alphabet).save(run_dir / "val.npz")
    with gzip.open(run_dir / "train_ids.txt.gz", "wt", compresslevel=9) as handle:
        handle.write("".join(f"{rid}\n" for rid, _ in sorted(train)))
    report["unigram_log_probs"] = unigram_log_probs([s for _, s in train[::10]])
    report["unigram_val_perplexity"] = round(math.exp(-sum(
        report["unigram_log_probs"].get(c, 0.0) for _, s in val for c in s if c != "X")
        / sum(len(s) - s.count("X") for _, s in val)), 4)
    report["filter_settings"] = wanted
    report_path.write_text(json.dumps(report, indent=1))
    return report


def bert_init(model, std: float = 0.02) -> None:
    """BERT/fairseq initialisation (``init_bert_params``): linear and embedding weights N(0, std),
    biases and the padding embedding zero. fair-esm's constructor keeps PyTorch's defaults, whose
    N(0, 1) embedding (tied to the LM head) starts the loss near 30 instead of ln(33) = 3.5."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                module.weight.normal_(0.0, std)
            if isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.zero_()
        model.embed_tokens.weight[model.padding_idx].zero_()
        model.lm_head.bias.zero_()


# ----------------------------------------------------------------------------- batches
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


def masked_logits(model, corrupted: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """``model(corrupted)["logits"][selected]`` (n x vocabulary), the last layer and the LM head run
    at the selected positions only (``engine.scoring.selected_hidden``)."""
    from tttlab.engine.scoring import selected_hidden

    return model.lm_head(selected_hidden(model, corrupted, selected))


def optimiser_step(model, opt, params, tokens, corrupted, selected, grad_clip: float, pool=None,
                   workers: int = 1, bf16: bool = False) -> torch.Tensor:
    """One step on a batch's mean masked cross-entropy (returned): gradients from ``workers`` row
    chunks run side by side (``engine.ttt.accumulate_gradients``; one chunk per CPU core in
    ``pretrain``), norm clipped to ``grad_clip``, then ``opt.step()``.

    ``bf16``: the forward runs under bfloat16 autocast (matrix products and attention in bf16;
    weights, gradients, optimiser and the loss stay float32), as mixed-precision training does."""
    chunks = torch.arange(len(tokens)).chunk(workers)
    loss = accumulate_gradients(params, [
        partial(_chunk_loss, model, tokens[rows], corrupted[rows], selected[rows],
                int(selected.sum()), bf16) for rows in chunks], len(chunks), pool)
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss


def _chunk_loss(model, tokens, corrupted, selected, n_selected: int,
                bf16: bool = False) -> torch.Tensor:
    """Summed masked cross-entropy of some rows of a batch over ``n_selected``, the batch's count:
    the chunks of a batch add up to its mean. Autocast is entered here, in the thread that runs the
    chunk (autocast state is per thread)."""
    device = tokens.device.type
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        logits = masked_logits(model, corrupted, selected)
    return F.cross_entropy(logits.float(), tokens[selected], reduction="sum") / n_selected


@torch.no_grad()
def masked_perplexity(model, alphabet, rows: list[torch.Tensor], crop: int,
                      seed: int = 1234) -> tuple[float, float]:
    """Validation perplexities with a fixed 15 % BERT mask: exp(mean cross-entropy) over all
    selected residues (the training objective's; optimistic, since a tenth of them are shown
    unchanged), and over the residues replaced by the mask token only (the honest one)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    total, count, masked_total, masked_count = 0.0, 0, 0.0, 0
    for i in range(0, len(rows), 16):
        tokens = collate(rows[i:i + 16], alphabet, crop, gen)
        corrupted, selected = bert_mask(tokens, alphabet, gen)
        logits = masked_logits(model, corrupted, selected)
        losses = F.cross_entropy(logits, tokens[selected], reduction="none")
        hidden = corrupted[selected] == alphabet.mask_idx
        total += float(losses.sum())
        count += len(losses)
        masked_total += float(losses[hidden].sum())
        masked_count += int(hidden.sum())
    return math.exp(total / count), math.exp(masked_total / max(1, masked_count))


# ------------------------------------------------------------------------------- training
def _check_run_folder(run_dir: Path, cfg: PretrainConfig, init) -> dict | None:
    """Create ``run_dir`` for ``cfg`` or check that it holds a run of ``cfg`` (and that ``init``'s
    weights were trained with it); return ``init``'s metadata."""
    meta = None
    if init is not None:
        meta = json.loads(Path(init).with_suffix(".json").read_text())
        if meta["config"] != asdict(cfg):
            raise ValueError(f"{init} was trained with other settings; use its size and --steps")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.json"
    if cfg_path.is_file():
        stored = json.loads(cfg_path.read_text())
        if stored != asdict(cfg):
            diff = {k: (stored.get(k), v) for k, v in asdict(cfg).items() if stored.get(k) != v}
            raise ValueError(f"{run_dir} holds a run with other settings {diff}; use another --run-dir")
    else:
        cfg_path.write_text(json.dumps(asdict(cfg), indent=1))
    return meta


def _adamw(model, cfg: PretrainConfig):
    """AdamW with weight decay on matrices only (ESM-2's betas and epsilon)."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=cfg.peak_lr, betas=(0.9, 0.98), eps=1e-8)


def _resume(model, opt, ckpt_path: Path, init, meta) -> dict:
    """The run's state: from its checkpoint (weights, optimiser, step), else from ``init``'s
    exported weights with a fresh optimiser, else a new run."""
    state = {"step": 0, "tokens": 0, "seconds": 0.0, "cpu_seconds": 0.0, "history": []}
    if ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        state = ck["state"]
        print(f"resumed at step {state['step']}", flush=True)
    elif init is not None:
        with torch.serialization.safe_globals([argparse.Namespace]):  # fair-esm's cfg object
            weights = torch.load(init, map_location="cpu", weights_only=True)["model"]
        model.load_state_dict({k.removeprefix("encoder."): v.float() for k, v in weights.items()},
                              strict=False)
        last = meta.get("weights", meta["history"][-1])  # older files: the last curve point
        state.update(step=last["step"], tokens=last["tokens"], seconds=last["seconds"],
                     cpu_seconds=last["cpu_seconds"], history=meta["history"], restart=last["step"])
        print(f"continuing from {init} at step {state['step']} with a fresh optimiser", flush=True)
    return state


def _batch_schedule(train, cfg: PretrainConfig):
    """``batches(step)``: the row indices of step ``step``'s batch. Each epoch is a fresh seeded
    shuffle of length-bucketed batches (``make_batches``), so a resumed run sees the same batches."""
    epoch = {"index": 0, "start": 0,
             "batches": make_batches(train.lengths, cfg, torch.Generator().manual_seed(cfg.seed * 1000))}

    def batches(step: int):
        if step < epoch["start"]:  # an earlier epoch: start again from the first
            epoch.update(index=0, start=0, batches=make_batches(
                train.lengths, cfg, torch.Generator().manual_seed(cfg.seed * 1000)))
        while step - epoch["start"] >= len(epoch["batches"]):  # also fast-forwards on resume
            epoch["start"] += len(epoch["batches"])
            epoch["index"] += 1
            epoch["batches"] = make_batches(
                train.lengths, cfg, torch.Generator().manual_seed(cfg.seed * 1000 + epoch["index"]))
        return epoch["batches"][step - epoch["start"]]

    return batches


def _validation_point(model, alphabet, val, cfg: PretrainConfig, state: dict, loss) -> dict:
    """One point of the training curve: tokens and time so far, the last training loss and the
    masked perplexity on the validation rows."""
    ppl, hidden_ppl = masked_perplexity(model, alphabet, val, cfg.crop)
    model.train()
    return {"step": state["step"], "tokens": state["tokens"], "seconds": round(state["seconds"], 1),
            "cpu_seconds": round(state["cpu_seconds"], 1), "train_loss": round(loss.item(), 4),
            "val_masked_perplexity": round(ppl, 4), "val_mask_token_perplexity": round(hidden_ppl, 4)}


def pretrain(data_dir: Path, run_dir: Path, cfg: PretrainConfig = PretrainConfig(),
             export: Path | None = None, max_seconds: float = 0.0, progress: bool = True,
             corpus_dir: Path | None = None, init: Path | None = None, bf16: bool = False) -> dict:
    """Run (or resume) pretraining in ``run_dir`` (full checkpoint: weights, optimiser, step, RNG is a
    function of seed and step); exports fair-esm files to ``export`` (default ``run_dir/model.pt``).

    ``max_seconds`` > 0 stops (after a checkpoint) once this call has trained that long. A run folder
    belongs to one configuration: resuming with another is refused. The filtered corpus is built once
    in ``corpus_dir`` (default: ``corpus_v2`` beside ``run_dir``).

    ``init``: a fresh ``run_dir`` on another machine continues from exported weights (the committed
    snapshot and its ``.json``): same configuration, schedule resumed at the snapshot's step, a new
    optimiser whose learning rate ramps up again over ``warmup_steps // 4`` steps.

    ``bf16``: train under bfloat16 autocast (``optimiser_step``); 1.2x per step (size m) on an AVX-512-BF16
    CPU (``benchmarks/bench_pretrain_step.py``), slower on CPUs without bf16 instructions. The
    precision is an execution setting, not part of the run's configuration: a run may switch, and
    every curve point trained that way says ``"precision": "bf16"``. Validation stays float32."""
    from tqdm.auto import tqdm

    meta = _check_run_folder(run_dir, cfg, init)
    export = Path(export) if export else run_dir / "esm2_tttlab_mini.pt"
    ckpt_path = run_dir / "ckpt.pt"
    model, alphabet = build_esm2(cfg.num_layers, cfg.embed_dim, cfg.attention_heads, seed=cfg.seed)
    bert_init(model)
    corpus_dir = Path(corpus_dir) if corpus_dir else run_dir.parent / "corpus_v2"
    report = prepare_corpus(data_dir, corpus_dir, cfg, alphabet)
    train = Corpus.load(corpus_dir / "train.npz")
    val_corpus = Corpus.load(corpus_dir / "val.npz")
    val = [val_corpus.row(i) for i in range(min(cfg.n_val_sequences, len(val_corpus)))]
    opt = _adamw(model, cfg)
    state = _resume(model, opt, ckpt_path, init, meta)

    def save():
        atomic_write(ckpt_path, lambda handle: torch.save(
            {"model": model.state_dict(), "opt": opt.state_dict(), "state": state}, handle))
        save_fair_esm_checkpoint(model, export)
        (run_dir / "history.json").write_text(json.dumps(state["history"], indent=1))

    if not state["history"]:
        ppl, hidden_ppl = masked_perplexity(model, alphabet, val, cfg.crop)
        state["history"].append({"step": 0, "tokens": 0, "seconds": 0.0, "cpu_seconds": 0.0,
                                 "val_masked_perplexity": round(ppl, 4),
                                 "val_mask_token_perplexity": round(hidden_ppl, 4)})
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    device = next(model.parameters()).device
    pool = ThreadPoolExecutor(cpu_workers(device, 1 << 20))
    bar = tqdm(total=cfg.steps, initial=state["step"], disable=not progress, desc="pretrain",
               mininterval=30)
    batches = _batch_schedule(train, cfg)
    started = time.perf_counter()
    while state["step"] < cfg.steps:
        step = state["step"]
        gen = torch.Generator().manual_seed(cfg.seed * 10_000_019 + step)
        t0, c0 = time.perf_counter(), time.process_time()
        tokens = collate([train.row(i) for i in batches(step)], alphabet, cfg.crop, gen)
        corrupted, selected = bert_mask(tokens, alphabet, gen)
        ramp = min(1.0, (step - state.get("restart", -10**9) + 1) / max(1, cfg.warmup_steps // 4))
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg) * ramp
        loss = optimiser_step(model, opt, params, tokens, corrupted, selected, cfg.grad_clip,
                              pool, cpu_workers(device, len(tokens)), bf16)
        state["step"] += 1
        state["tokens"] += int((tokens != alphabet.padding_idx).sum())
        state["seconds"] += time.perf_counter() - t0
        state["cpu_seconds"] = state.get("cpu_seconds", 0.0) + time.process_time() - c0
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr_at(step, cfg):.1e}", refresh=False)
        done = state["step"] == cfg.steps or (
            max_seconds and time.perf_counter() - started > max_seconds)
        if state["step"] % cfg.val_every == 0 or done:
            state["history"].append(_validation_point(model, alphabet, val, cfg, state, loss))
            if bf16:
                state["history"][-1]["precision"] = "bf16"
            print(json.dumps(state["history"][-1]), flush=True)
        if state["step"] % cfg.ckpt_every == 0 or done:
            save()
        if done:
            break
    bar.close()
    pool.shutdown()
    model.eval()
    return {"report": report, "history": state["history"], "model": model}


def unigram_log_probs(seqs: list[str]) -> dict[str, float]:
    """log frequency of each standard amino acid in ``seqs`` (the unigram baseline model)."""
    counts = {a: 1 for a in STANDARD_AA}
    for s in seqs:
        for c in s:
            if c in counts:
                counts[c] += 1
    total = sum(counts.values())
    return {a: math.log(n / total) for a, n in counts.items()}


def validation_sequences(data_dir: Path, cfg: PretrainConfig = PretrainConfig()) -> list[str]:
    """The run's validation set, sorted: every distinct corpus sequence of at least ``cfg.min_length``
    standard letters with sha1(sequence) % ``cfg.val_modulus`` == 0 that is not similar to an
    evaluation protein. It is the set ``filter_corpus`` holds out (the same rule applied to the few
    candidates only, so it takes seconds, not the full filter's minutes); no training sequence is
    similar to any of them."""
    from tttlab.training.leakage import similar_to

    candidates = sorted({s for s in (seq.upper() for _, seq in corpus_records(data_dir))
                         if _is_val(s, cfg.val_modulus) and _usable(s, cfg)})
    flags = similar_to(candidates, list(evaluation_sequences(data_dir).values()), cfg.kmer_exact,
                       cfg.kmer_homology, cfg.homology_hits)
    return [s for s, hit in zip(candidates, flags.any(axis=1)) if not hit]


def hash_order(seqs) -> list[str]:
    """``seqs`` sorted by their SHA-256: a fixed order unrelated to the sequences themselves, for
    taking the first n of a set without favouring any kind of sequence."""
    return sorted(seqs, key=lambda s: hashlib.sha256(s.encode()).hexdigest())


def heldout_chains(data_dir: Path, n: int = 50, max_len: int = 0,
                   cfg: PretrainConfig = PretrainConfig()) -> list[str]:
    """``n`` validation sequences (``validation_sequences``) without X, each cut to ``max_len``
    residues when given: proteins the model never trained on, none of them similar to an evaluation
    protein (for measuring perplexity and choosing the TTT preset). They are taken in the order of
    their SHA-256, a fixed order unrelated to the sequence: the validation set's own (alphabetical)
    order would put the few fragments and PDB chains that do not start with M first."""
    seqs = hash_order(s for s in validation_sequences(data_dir, cfg) if "X" not in s)[:n]
    return [s[:max_len] for s in seqs] if max_len else seqs


def evaluate_pretrained(model, data_dir: Path, unigram: dict[str, float], n_heldout: int = 50,
                        progress: bool = True, config: PretrainConfig = PretrainConfig()) -> dict:
    """Pseudo-perplexity of ``model`` vs the unigram baseline on the first ``n_heldout`` validation
    sequences of a run with ``config`` (none when 0) and on the 40 pfam40 domains."""
    from tqdm.auto import tqdm

    from tttlab.engine.scoring import pseudo_perplexity

    sets = {"heldout": heldout_chains(data_dir, n_heldout, cfg=config) if n_heldout else [],
            "pfam40": [pdb_sequence(f) for f in sorted((data_dir / "structures" / "pfam40")
                                                       .glob("*.pdb"))]}
    sets = {name: seqs for name, seqs in sets.items() if seqs}
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


def check_leakage(data_dir: Path, train_ids: Path, sample_every: int = 50) -> dict:
    """Audit a ``train_ids.txt.gz``: rebuild its sequences from the corpus, count those sharing an
    exact 20-mer with each evaluation group (numpy index over all of them, and an independent
    Python-set check on every ``sample_every``-th); both must be zero."""
    from tttlab.training.leakage import shares_exact_kmer

    with gzip.open(train_ids, "rt") as handle:
        wanted = {line.strip() for line in handle if line.strip()}
    by_id = dict(corpus_records(data_dir))
    missing = sorted(wanted - by_id.keys())
    if missing:
        raise ValueError(f"{train_ids}: {len(missing)} ids not in the corpus, e.g. {missing[0]}")
    train = [by_id[i].upper() for i in sorted(wanted)]
    out = {"train_sequences": len(train)}
    for name, seqs in evaluation_sequences(data_dir).items():
        shared = int(shares_exact_kmer(train, seqs).sum())
        kmers = set().union(*(_kmers(s.upper(), 20) for s in seqs))
        sampled = sum(any(t[i:i + 20] in kmers for i in range(len(t) - 19))
                      for t in train[::sample_every])
        out[name] = {"sharing_a_20mer": shared, "sharing_a_20mer_python_sample": sampled,
                     "sample_size": len(train[::sample_every])}
    return out


def pretraining_meta(weights: str | Path) -> dict:
    """The ``.json`` that ``tttlab pretrain`` writes beside exported weights (configuration, filter
    report, unigram baseline, curve); ``weights`` is a ``.pt`` path or ``"tttlab-mini"``. A missing
    file is a one-line error."""
    from tttlab.engine.models import local_path

    path = local_path(weights).with_suffix(".json")
    if not path.is_file():
        raise ValueError(f"{path} not found: a pretrained checkpoint needs the .json that "
                         "`tttlab pretrain` writes beside it (configuration, unigram baseline)")
    return json.loads(path.read_text())


def _model_meta(cfg: PretrainConfig, report: dict, history: list,
                state: dict | None = None) -> dict:
    """The ``.json`` written beside exported weights: configuration, filter report, baseline, curve,
    and where the weights stand (``weights``: step, tokens, seconds; the curve's last point unless
    the run's ``state`` says otherwise: checkpoints fall between curve points)."""
    where = state or history[-1]
    return {"config": asdict(cfg),
            "filter_report": {k: v for k, v in report.items() if k != "unigram_log_probs"},
            "unigram_val_perplexity": report["unigram_val_perplexity"],
            "unigram_log_probs": report["unigram_log_probs"],
            "weights": {k: where[k] for k in ("step", "tokens", "seconds", "cpu_seconds")},
            "history": history}


def export_snapshot(run_dir: Path, path: Path, corpus_dir: Path | None = None) -> dict:
    """Write the run's latest checkpoint as fp16 fair-esm weights + ``.json`` at ``path`` (the copy
    committed so that a new machine can continue with ``--init``); returns the weights' step and
    the last curve point."""
    cfg = PretrainConfig(**json.loads((run_dir / "config.json").read_text()))
    ck = torch.load(run_dir / "ckpt.pt", map_location="cpu", weights_only=True)
    model, _ = build_esm2(cfg.num_layers, cfg.embed_dim, cfg.attention_heads)
    model.load_state_dict(ck["model"])
    corpus_dir = Path(corpus_dir) if corpus_dir else run_dir.parent / "corpus_v2"
    report = json.loads((corpus_dir / "corpus_report.json").read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    save_fair_esm_checkpoint(model, path, dtype=torch.float16)
    meta = _model_meta(cfg, report, ck["state"]["history"], ck["state"])
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return {"weights_step": meta["weights"]["step"], "last_curve_point": meta["history"][-1]}
