"""Engine benchmark: tttlab's scoring and TTT against plain loops over stock fair-esm, in one run
on this machine (CPU, or CUDA when present): speed ratios, tokens/s, peak memory (full vs LoRA),
achieved GFLOP/s next to the machine's matmul GFLOP/s, for tttlab-mini and a random ESM-2 8M.

    python benchmarks/bench_engine.py            # table
    python benchmarks/bench_engine.py --json     # one JSON object
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import esm
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tttlab  # noqa: E402
from tttlab.engine import masking, scoring, ttt  # noqa: E402
from tttlab.engine.models import build_esm2, load_model, resolve_device  # noqa: E402

#: ``wall``: elapsed time (the default, for an otherwise idle machine); ``process``: this
#: process's CPU time, steadier on a shared CPU (use with --threads 1; CPU only)
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}
_clock = CLOCKS["wall"]


# ----------------------------------------------------------------------------- helpers
def clock(device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return _clock()


def machine(device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "fair_esm": getattr(esm, "__version__", "?"),
            "tttlab": tttlab.__version__ if hasattr(tttlab, "__version__") else "?",
            "python": platform.python_version(), "device": str(device),
            "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def matmul_gflops(device, n: int, repeats: int = 5, dtype=torch.float32) -> float:
    """Best-of-``repeats`` GFLOP/s of an n x n matrix product."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = clock(device)
        a @ b
        best = min(best, clock(device) - t)
    return 2 * n ** 3 / best / 1e9


def stock_model(model):
    """A pristine fair-esm ESM2 (never patched by tttlab) with ``model``'s weights."""
    stock = esm.model.esm2.ESM2(num_layers=model.num_layers, embed_dim=model.embed_dim,
                                attention_heads=model.attention_heads, alphabet=model.alphabet,
                                token_dropout=model.token_dropout)
    stock.load_state_dict(model.state_dict())
    return stock.to(scoring.model_device(model)).eval()


def get_model(name: str, device):
    if name == "tttlab-mini":
        return load_model("tttlab-mini", device=device)[0]
    if name == "esm2-8M-arch":  # ESM-2 8M architecture, random weights (no download)
        return build_esm2(num_layers=6, embed_dim=320, attention_heads=20, seed=0)[0].to(device)
    if name == "tiny":
        return build_esm2(num_layers=2, embed_dim=64, attention_heads=4, seed=0)[0].to(device)
    raise ValueError(f"unknown model {name!r}")


# ----------------------------------------------------------------------------- scoring
def stock_marginals(stock, seq: str) -> np.ndarray:
    """The textbook loop: one masked position per forward pass, full logits, no_grad."""
    alphabet, device = stock.alphabet, scoring.model_device(stock)
    tokens = scoring.encode(alphabet, seq, device)[None]
    aa = [alphabet.get_idx(a) for a in masking.STANDARD_AA]
    out = np.empty((len(seq), len(aa)), dtype=np.float32)
    with torch.no_grad(), scoring.autocast_for(device):
        for i in range(len(seq)):
            t = tokens.clone()
            t[0, i + 1] = alphabet.mask_idx
            out[i] = torch.log_softmax(stock(t)["logits"][0, i + 1].float(), -1)[aa].cpu().numpy()
    return out


def spread(values) -> dict:
    """Median, min, max and count of timings (the median is the number quoted)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def bench_scoring(model, seq: str, repeats: int) -> dict:
    """Whole call, sequence to table: ``masked_marginals`` against the stock per-position loop,
    one warm-up each, then ``repeats`` of each interleaved."""
    device = scoring.model_device(model)
    stock = stock_model(model)
    scoring.masked_marginals(model, seq[:20]), stock_marginals(stock, seq[:20])  # warm-up
    engine_s, stock_s = [], []
    for _ in range(repeats):
        t = clock(device)
        fast = scoring.masked_marginals(model, seq)
        engine_s.append(clock(device) - t)
        t = clock(device)
        slow = stock_marginals(stock, seq)
        stock_s.append(clock(device) - t)
    e, s = statistics.median(engine_s), statistics.median(stock_s)
    tokens = len(seq) * (len(seq) + 2)  # L masked copies of L + 2 tokens
    return {"positions": len(seq), "engine_s": spread(engine_s), "stock_loop_s": spread(stock_s),
            "speedup": s / e, "engine_tokens_per_s": tokens / e, "stock_tokens_per_s": tokens / s,
            "engine_positions_per_s": len(seq) / e, "batch_size": scoring._default_batch(
                model, len(seq) + 2), "max_abs_diff": float(np.abs(fast - slow).max())}


def bench_approx(model, seq: str, spacings) -> dict:
    """Rank agreement of the spaced approximate scorer with exact scores, all single mutants."""
    from scipy.stats import spearmanr

    device = scoring.model_device(model)
    t = clock(device)
    exact = scoring.masked_marginals(model, seq)
    exact_s = clock(device) - t
    mutants = [f"{w}{i + 1}{m}" for i, w in enumerate(seq) if w in masking.STANDARD_AA
               for m in masking.STANDARD_AA if m != w]
    ref = scoring.score_mutants(model, seq, mutants, marginals=exact)
    out = {"n_mutants": len(mutants), "exact_s": exact_s, "spacings": {}}
    for spacing in spacings:
        t = clock(device)
        approx = scoring.approx_masked_marginals(model, seq, spacing=spacing)
        sec = clock(device) - t
        rho = spearmanr(ref, scoring.score_mutants(model, seq, mutants, marginals=approx))[0]
        out["spacings"][str(spacing)] = {"spearman": float(rho), "seconds": sec,
                                         "speedup_vs_exact": exact_s / sec}
    return out


# --------------------------------------------------------------------------------- TTT
def ttt_batches(model, seq, cfg, steps):
    """The corrupted micro-batches ``ttt.customize`` draws on CPU, in its order."""
    device = scoring.model_device(model)
    tokens = scoring.encode(model.alphabet, seq, device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    out = []
    for _ in range(steps * cfg.grad_accum_steps):
        batch = masking.crop_copies(tokens, cfg.batch_size, cfg.crop_size, gen, device,
                                    cfg.crop)
        corrupted, _ = ttt.corrupt(batch, model.alphabet, cfg, gen)
        out.append((corrupted, batch))
    return out


def stock_ttt(stock, batches, cfg, steps) -> tuple[list[float], list[float]]:
    """Bare loop: stock forward, all-token cross-entropy, backward, SGD; same trainable set as
    the engine (everything but the tied token embedding), same precision."""
    device = scoring.model_device(stock)
    stock.embed_tokens.weight.requires_grad_(False)
    opt = torch.optim.SGD([p for p in stock.parameters() if p.requires_grad], lr=cfg.lr)
    stock.train()
    times, losses = [], []
    for step in range(steps):
        t = clock(device)
        opt.zero_grad(set_to_none=True)
        total = 0.0
        for corrupted, target in batches[step * cfg.grad_accum_steps:
                                         (step + 1) * cfg.grad_accum_steps]:
            with scoring.autocast_for(device):
                logits = stock(corrupted)["logits"].float()
            loss = F.cross_entropy(logits.flatten(0, 1), target.flatten())
            loss.backward()  # unscaled: the step's gradient is the sum, as in ProteinTTT
            total += loss.detach() / cfg.grad_accum_steps
        opt.step()
        losses.append(float(total))
        times.append(clock(device) - t)
    stock.eval()
    return times, losses


def step_flops(stock, batches, cfg) -> float:
    """Matmul FLOPs of one optimiser step (forward + backward), counted on the stock model."""
    from torch.utils.flop_counter import FlopCounterMode

    stock.embed_tokens.weight.requires_grad_(False)
    corrupted, target = batches[0]
    with FlopCounterMode(display=False) as counter:
        logits = stock(corrupted)["logits"]
        F.cross_entropy(logits.flatten(0, 1), target.flatten()).backward()
    stock.zero_grad(set_to_none=True)
    return counter.get_total_flops() * cfg.grad_accum_steps


def _rate(shape, device, repeats=9) -> float:
    """Peak GFLOP/s of products of ``shape`` = (batch, m, k, n) (batch 0: a plain mm), fastest of
    ``repeats`` (a peak, not a typical time): the better of one product on all intra-op threads
    and, on CPU, one product per core side by side at one thread each (how ``tttlab`` runs
    micro-batches there)."""
    from concurrent.futures import ThreadPoolExecutor

    b, m, k, n = shape
    lead = (b,) if b else ()
    op = torch.bmm if b else torch.mm
    flops = 2 * max(b, 1) * m * k * n

    def timed(workers):
        pairs = [(torch.randn(*lead, m, k, device=device), torch.randn(*lead, k, n, device=device))
                 for _ in range(workers)]
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda xy: op(*xy), pairs))
            times = []
            for _ in range(repeats):
                t = clock(device)
                list(pool.map(lambda xy: op(*xy), pairs))
                times.append(clock(device) - t)
        return workers * flops / min(times) / 1e9

    best = timed(1)
    threads = torch.get_num_threads()
    if device.type == "cpu" and threads > 1:
        torch.set_num_threads(1)
        try:
            best = max(best, timed(threads))
        finally:
            torch.set_num_threads(threads)
    return best


def step_shape_peak(model, rows: int, length: int, micro_batches: int) -> dict:
    """Seconds one optimiser step's matrix products would take at the rates this machine reaches
    on exactly those shapes: each linear layer's forward, input-gradient and weight-gradient
    product, the attention scores and weighted sums with their gradients, the LM head."""
    device = scoring.model_device(model)
    d, m = model.embed_dim, rows * length
    heads, hd = model.attention_heads, model.embed_dim // model.attention_heads
    per_layer = []
    for k, n in [(d, d)] * 4 + [(d, 4 * d), (4 * d, d)]:  # q, k, v, out; fc1, fc2
        per_layer += [(0, m, k, n), (0, m, n, k), (0, k, m, n)]  # xW, dy W^T, x^T dy
    bh = rows * heads
    per_layer += [(bh, length, hd, length), (bh, length, length, hd),  # QK^T, PV
                  (bh, length, length, hd), (bh, length, hd, length),  # dQ, dP
                  (bh, hd, length, length), (bh, hd, length, length)]  # dK, dV
    vocab = len(model.alphabet)
    head = [(0, m, d, d), (0, m, d, d), (0, d, m, d), (0, m, d, vocab), (0, m, vocab, d)]
    seconds, flops = 0.0, 0.0
    for shapes, count in ((per_layer, model.num_layers), (head, 1)):
        for shape in shapes:
            f = 2 * max(shape[0], 1) * shape[1] * shape[2] * shape[3]
            seconds += count * f / (_rate(shape, device) * 1e9)
            flops += count * f
    return {"seconds_per_step": seconds * micro_batches,
            "gflop_per_step": flops * micro_batches / 1e9,
            "gflops_on_step_shapes": flops / seconds / 1e9}


def bench_ttt(model, seq, cfg, steps: int, repeats: int) -> dict:
    """Whole ``customized()`` runs against a bare stock loop over the same batches, one warm-up
    each, then ``repeats`` of each interleaved; per-step times pooled over the runs."""
    device = scoring.model_device(model)
    with ttt.customized(model, seq, cfg, progress=False, steps=1, grad_accum_steps=2):
        pass  # warm-up
    batches = ttt_batches(model, seq, cfg, steps)
    stock_ttt(stock_model(model), batches[: cfg.grad_accum_steps], cfg, 1)  # warm-up
    engine_runs, stock_runs, engine_steps, stock_steps = [], [], [], []
    for _ in range(repeats):
        marks = []  # the callback runs right after step 0 and after every optimiser step
        t = clock(device)
        with ttt.customized(model, seq, cfg, progress=False, steps=steps,
                            callback=lambda step, m: marks.append(clock(device))) as result:
            engine_losses = [h["loss"] for h in result.history[1:]]
        engine_runs.append(clock(device) - t)
        engine_steps += [b - a for a, b in zip(marks, marks[1:])]
        stock = stock_model(model)
        t = clock(device)
        times, stock_losses = stock_ttt(stock, batches, cfg, steps)
        stock_runs.append(clock(device) - t)
        stock_steps += times
    flops = step_flops(stock_model(model), batches, cfg)
    peak = step_shape_peak(model, cfg.batch_size, len(seq) + 2, cfg.grad_accum_steps)
    e, s = statistics.median(engine_steps), statistics.median(stock_steps)
    rows = cfg.batch_size * cfg.grad_accum_steps
    tokens = rows * (len(seq) + 2)
    out = {"steps": steps, "repeats": repeats, "rows_per_step": rows,
           "engine_run_s": spread(engine_runs), "stock_run_s": spread(stock_runs),
           "run_ratio": statistics.median(engine_runs) / statistics.median(stock_runs),
           "engine_step_s": spread(engine_steps), "stock_step_s": spread(stock_steps),
           "step_ratio": e / s, "engine_tokens_per_s": tokens / e,
           "stock_tokens_per_s": tokens / s, "step_gflop": flops / 1e9,
           "engine_gflops": flops / e / 1e9, "stock_gflops": flops / s / 1e9,
           "matmul_peak_on_step_shapes": peak,
           "engine_fraction_of_matmul_peak": peak["seconds_per_step"] / e,
           "stock_fraction_of_matmul_peak": peak["seconds_per_step"] / s}
    if device.type == "cpu":  # same batches in the same order: the losses must agree
        out["loss_max_rel_diff"] = float(max(abs(a - b) / abs(b)
                                             for a, b in zip(engine_losses, stock_losses)))
    return out


# ------------------------------------------------------------------------------ memory
def saved_and_grad_mb(model, seq, cfg) -> tuple[float, float]:
    """Exact, allocator-independent parts of training memory for one pass of ``cfg.batch_size``
    rows: activations autograd keeps for backward (parameters excluded) and gradient buffers."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved, grads = {}, []

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    def count_grads(step, m):
        grads.append(sum(p.numel() * p.element_size() for p in m.parameters() if p.requires_grad))

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with ttt.customized(model, seq, cfg, progress=False, steps=1, grad_accum_steps=1,
                            callback=count_grads):
            pass
    return sum(saved.values()) / 2**20, grads[0] / 2**20


def peak_memory_child(name: str, trainable: str, seq: str, device, accum: int) -> dict:
    """Runs in a subprocess: peak memory of one TTT step above the memory held before it."""
    model = get_model(name, device)
    cfg = tttlab.preset(trainable=trainable, grad_accum_steps=accum, lr=1e-4)
    with ttt.customized(model, seq[:20], cfg, progress=False, steps=1):
        pass  # warm-up (imports, peft injection code paths)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with ttt.customized(model, seq, cfg, progress=False, steps=1):
            pass
        out = {"peak_mb": (torch.cuda.max_memory_allocated(device) - base) / 2**20,
               "method": "torch.cuda.max_memory_allocated above the level before the step"}
    else:
        status = Path("/proc/self/status")
        try:  # reset the kernel's high-water mark (VmHWM) to the current resident size
            Path("/proc/self/clear_refs").write_text("5")
            method = "resident memory: VmHWM after clear_refs, minus VmRSS before the step"
        except OSError:
            method = "resident memory: ru_maxrss minus VmRSS before the step"

        def field(key):
            for line in status.read_text().splitlines():
                if line.startswith(key):
                    return int(line.split()[1]) / 1024  # kB -> MB
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        before = field("VmRSS")
        with ttt.customized(model, seq, cfg, progress=False, steps=1):
            pass
        peak = field("VmHWM") if "clear_refs" in method else \
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out = {"peak_mb": peak - before, "method": method}
    out["saved_activations_mb"], out["gradients_mb"] = saved_and_grad_mb(model, seq, cfg)
    return out


def bench_memory(name, seq, device, threads, accum) -> dict:
    out = {}
    for trainable in ("all", "lora"):
        cmd = [sys.executable, __file__, "--_memory", name, trainable, "--device", str(device),
               "--threads", str(threads), "--_seq", seq, "--_accum", str(accum)]
        run = subprocess.run(cmd, capture_output=True, text=True, check=True,
                             env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        out["full" if trainable == "all" else "lora_r8"] = json.loads(
            run.stdout.strip().splitlines()[-1])
    out["lora_over_full_peak"] = out["lora_r8"]["peak_mb"] / out["full"]["peak_mb"]
    out["lora_over_full_saved_plus_grads"] = (
        (out["lora_r8"]["saved_activations_mb"] + out["lora_r8"]["gradients_mb"])
        / (out["full"]["saved_activations_mb"] + out["full"]["gradients_mb"]))
    return out


# -------------------------------------------------------------------------------- main
def run(args) -> dict:
    device = resolve_device(args.device)
    from tttlab.data import path, read_fasta

    seq = read_fasta(path("dms/BLAT_ECOLX_Stiffler_2015.wt.fasta"))[0][1]
    if args.quick:
        seq = seq[:40]
    start = time.perf_counter()
    peak = matmul_gflops(device, 8192 if device.type == "cuda" else 2048)
    result = {"command": "python benchmarks/bench_engine.py " + " ".join(args.argv),
              "machine": machine(device), "protein": f"TEM-1 (BLAT_ECOLX), {len(seq)} aa",
              "matmul_gflops_fp32": peak, "models": {}}
    if device.type == "cuda":
        result["matmul_gflops_bf16"] = matmul_gflops(device, 8192, dtype=torch.bfloat16)
    for name in args.models:
        model = get_model(name, device)
        cfg = tttlab.preset(batch_size=4, grad_accum_steps=2 if args.quick else 16)
        entry = {"layers": model.num_layers, "dim": model.embed_dim,
                 "heads": model.attention_heads,
                 "parameters": sum(p.numel() for p in model.parameters())}
        entry["scoring"] = bench_scoring(model, seq, args.repeats)
        entry["ttt"] = bench_ttt(model, seq, cfg, 1 if args.quick else args.steps, args.repeats)
        if not args.no_memory:
            entry["memory"] = bench_memory(name, seq, device, torch.get_num_threads(),
                                           cfg.grad_accum_steps if device.type == "cuda" else 2)
        result["models"][name] = entry
        if name == args.models[0] and args.approx:
            result["approx_scoring"] = {"model": name, **bench_approx(model, seq, args.approx)}
    first = result["models"][args.models[0]]
    result["scoring_speedup"] = first["scoring"]["speedup"]
    result["ttt_step_ratio"] = first["ttt"]["step_ratio"]
    result["ttt_run_ratio"] = first["ttt"]["run_ratio"]
    result["targets_met"] = {"scoring_speedup>=1.3": result["scoring_speedup"] >= 1.3,
                             "ttt_run_ratio<=0.95": result["ttt_run_ratio"] <= 0.95}
    result["settings"] = {
        "threads": torch.get_num_threads(), "scoring_repeats": args.repeats,
        "ttt_steps_timed": args.steps, "ttt_batch": "4 x accumulation 16 (64 rows per step)",
        "timing": f"{args.clock} clock; one warm-up call each, then {args.repeats} whole calls "
                  "of engine and stock interleaved; medians (per-step medians pooled over the "
                  "TTT runs)",
        "memory": "one TTT step in a fresh subprocess; CPU: accumulation 2 (a pass holds 4 rows "
                  "whatever the accumulation), peak resident memory above the level before it"}
    result["wall_seconds"] = time.perf_counter() - start
    return result


def table(r: dict) -> str:
    m = r["machine"]
    lines = [f"Machine: {m['cpu']} ({m['device']}), {m['torch_threads']} threads, torch "
             f"{m['torch']}, fair-esm {m['fair_esm']}; {r['protein']}; matmul "
             f"{r['matmul_gflops_fp32']:.0f} GFLOP/s fp32", "",
             "| model | scoring: engine s | stock loop s | speedup | TTT step: engine s | stock s"
             " | ratio | engine GFLOP/s (% of matmul on the step's shapes) | TTT tokens/s | scoring tokens/s | peak MB "
             "full / LoRA | saved act. + grads MB full / LoRA |", "|" + "---|" * 12]
    for name, e in r["models"].items():
        sc, t = e["scoring"], e["ttt"]
        mem, act = e.get("memory"), "-"
        if mem:
            full, lora = mem["full"], mem["lora_r8"]
            act = (f"{full['saved_activations_mb'] + full['gradients_mb']:.0f} / "
                   f"{lora['saved_activations_mb'] + lora['gradients_mb']:.0f}")
            mem = f"{full['peak_mb']:.0f} / {lora['peak_mb']:.0f}"
        else:
            mem = "-"
        lines.append(
            f"| {name} | {sc['engine_s']['median']:.2f} | {sc['stock_loop_s']['median']:.2f} | "
            f"{sc['speedup']:.2f} | {t['engine_step_s']['median']:.2f} | "
            f"{t['stock_step_s']['median']:.2f} | {t['step_ratio']:.2f} | "
            f"{t['engine_gflops']:.0f} ({100 * t['engine_fraction_of_matmul_peak']:.0f} %) | "
            f"{t['engine_tokens_per_s']:.0f} | {sc['engine_tokens_per_s']:.0f} | {mem} | {act} |")
    if "approx_scoring" in r:
        a = r["approx_scoring"]
        lines.append("")
        lines.append(f"Approximate scorer ({a['model']}, {a['n_mutants']} single mutants): "
                     + ", ".join(f"spacing {k}: Spearman {v['spearman']:.3f}, "
                                 f"{v['speedup_vs_exact']:.1f}x faster"
                                 for k, v in a["spacings"].items()))
    lines += ["", f"medians; scoring_speedup = {r['scoring_speedup']:.2f} (target >= 1.3), "
              f"whole TTT run ratio = {r['ttt_run_ratio']:.2f} (target <= 0.95); "
              f"{r['wall_seconds']:.0f} s"]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: auto)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--models", default="tttlab-mini,esm2-8M-arch",
                        help="comma-separated: tttlab-mini, esm2-8M-arch, tiny")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed whole calls of each (scoring, TTT run), after a warm-up")
    parser.add_argument("--steps", type=int, default=3, help="TTT steps per timed run")
    parser.add_argument("--approx", default="8,16,32",
                        help="spacings of the approximate scorer to compare ('' = skip)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall (default) or process CPU time (shared machines, 1 thread)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--quick", action="store_true", help="40 residues, 1 step: smoke test")
    parser.add_argument("--_memory", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--_seq", help=argparse.SUPPRESS)
    parser.add_argument("--_accum", type=int, default=2, help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    global _clock
    _clock = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._memory:
        out = peak_memory_child(args._memory[0], args._memory[1], args._seq,
                                resolve_device(args.device), args._accum)
        print(json.dumps(out))
        return out
    args.models = [m for m in args.models.split(",") if m]
    args.approx = [int(s) for s in args.approx.split(",") if s]
    result = run(args)
    print(json.dumps(result, indent=1) if args.json else table(result))
    return result


if __name__ == "__main__":
    main()
