"""Test-time training: fine-tune an ESM-2 model on one protein with its own masked-LM loss
(Bushuiev et al., "One protein is all you need", arXiv 2411.02109), with an exact, bit-for-bit reset.

``customize`` trains in place and returns a history; ``customized`` is the context-manager form that
restores the model on exit, even on error.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F

from tttlab.engine.config import TTTConfig, preset_for
from tttlab.common.homolog_set import HomologSet
from tttlab.engine.homologs import HomologSampler
from tttlab.engine.masking import bert_mask, crop_copies, exact_count_mask
from tttlab.engine.scoring import (_final_hidden, autocast_for, check_sequence, encode,
                                   model_device, pseudo_perplexity, selected_hidden)

#: fair-esm's attention projections; a model may name its own (``lora_targets``: names or a regex)
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


@dataclass
class TTTResult:
    """What one customisation did: per-step history and the step kept."""

    sequence: str
    config: TTTConfig
    history: list[dict] = field(default_factory=list)
    best_step: int | None = None
    seconds: float = 0.0
    n_homologs: int = 0  #: homologs the copies were drawn from besides the target
    homolog_source: str | None = None

    def table(self):
        """The history as a pandas DataFrame (step, loss, pseudo_perplexity, seconds, ...)."""
        import pandas as pd

        return pd.DataFrame(self.history)

    @property
    def pseudo_perplexity_before(self):
        vals = [h["pseudo_perplexity"] for h in self.history if "pseudo_perplexity" in h]
        return vals[0] if vals else None

    @property
    def pseudo_perplexity_after(self):
        vals = [h for h in self.history if "pseudo_perplexity" in h]
        if not vals:
            return None
        if self.best_step is not None:
            return next(h["pseudo_perplexity"] for h in vals if h["step"] == self.best_step)
        return vals[-1]["pseudo_perplexity"]


# ------------------------------------------------------------------------ state & reset
def snapshot(model) -> dict[str, torch.Tensor]:
    """Copies of every parameter and buffer (what ``restore`` puts back bit for bit)."""
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}


@torch.no_grad()
def restore(model, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` into the model's existing tensors in place (keeps the embedding/LM-head tie)."""
    current = model.state_dict(keep_vars=True)
    if set(current) != set(state):
        raise ValueError("snapshot does not match the model's parameters")
    for k, v in current.items():
        v.copy_(state[k])


def _add_lora(model, cfg: TTTConfig):
    """Inject peft LoRA adapters into ``LORA_TARGETS`` (seeded by ``cfg.seed`` without touching the
    caller's global RNG); ``reset_lora`` undoes it, ``requires_grad`` flags included."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("trainable='lora' needs peft: pip install 'tttlab[lora]'") from err
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                      target_modules=getattr(model, "lora_targets", LORA_TARGETS),
                      init_lora_weights="gaussian" if cfg.lora_init == "gaussian" else True)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}  # peft freezes the rest
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)  # adapter A matrices are random
        inject_adapter_in_model(lora, model)
    model.__dict__["_tttlab_requires_grad"] = flags
    return [p for n, p in model.named_parameters() if "lora_" in n]


def reset_lora(model) -> None:
    """Remove the LoRA adapters ``customize(..., trainable="lora")`` added: every peft LoRA layer
    goes back to the original Linear it wraps (weights untouched) and every parameter gets back the
    ``requires_grad`` flag it had before (peft turns them off; a frozen weight can even take
    another CPU matmul kernel, so outputs would differ in the last bit)."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if hasattr(child, "base_layer") and hasattr(child, "lora_A"):
                setattr(module, child_name, child.base_layer)
    model.__dict__.pop("peft_config", None)  # peft's record of the adapters it injected
    flags = model.__dict__.pop("_tttlab_requires_grad", {})
    for name, param in model.named_parameters():
        param.requires_grad_(flags.get(name, param.requires_grad))


def trainable_parameters(model, cfg: TTTConfig) -> list[torch.nn.Parameter]:
    """All parameters except the token embedding (tied to the LM head), as published."""
    frozen = {id(model.embed_tokens.weight)}
    return [p for p in model.parameters() if id(p) not in frozen]


# ---------------------------------------------------------------------------- the loop
def corrupt(batch: torch.Tensor, alphabet, cfg: TTTConfig, generator):
    """The masked copies of ``batch`` and their selection, by ``cfg.mask_count``'s rule."""
    if cfg.mask_count == "exact":
        return exact_count_mask(batch, alphabet, generator, cfg.mask_ratio, cfg.bert_replace,
                                cfg.bert_keep, cfg.replace_vocab)
    return bert_mask(batch, alphabet, generator, cfg.mask_ratio, cfg.bert_replace,
                     cfg.bert_keep, cfg.replace_vocab)


def _loss(model, tokens, corrupted, selected, cfg, padded: bool = False):
    """A micro-batch's loss. ``padded`` (homolog batches of different lengths): padding is not
    attended to and not scored."""
    if cfg.loss == "masked_tokens":  # mean over each copy's selected positions, then over copies
        hidden = selected_hidden(model, corrupted, selected, padded=padded)  # last layer: those only
        ce = F.cross_entropy(model.lm_head(hidden).float(), tokens[selected], reduction="none")
        copy = selected.nonzero()[:, 0]
        per_copy = torch.zeros(len(tokens), device=ce.device).index_add_(0, copy, ce)
        return (per_copy / selected.sum(1)).mean()  # both masking rules select >= 1 a row
    logits = model.lm_head(_final_hidden(model, corrupted, padded=padded)).float()
    if padded:
        return F.cross_entropy(logits.flatten(0, 1), tokens.flatten(),
                               ignore_index=model.alphabet.padding_idx)
    return F.cross_entropy(logits.flatten(0, 1), tokens.flatten())  # every token, BOS/EOS too


def _summed(params, losses):
    """Gradients of the sum of ``losses`` (zero-argument callables, each returning one
    micro-batch's loss), one backward pass at a time (None for parameters outside the graph), and
    that sum, detached."""
    grads, total = [None] * len(params), 0.0
    for loss_fn in losses:
        loss = loss_fn()
        new = torch.autograd.grad(loss, params, allow_unused=True)
        grads = [g if a is None else (a if g is None else a.add_(g)) for a, g in zip(grads, new)]
        total += loss.detach()
    return grads, total


def cpu_workers(device, micro_batches: int) -> int:
    """Threads that each run whole micro-batches with one intra-op thread, on CPU: on the 2-core
    CPU here two micro-batches side by side beat one micro-batch spread over two threads (small
    matrix products and element-wise kernels scale poorly across cores;
    benchmarks/bench_proteinttt.py). One (the caller's thread) on other devices."""
    if torch.device(device).type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), micro_batches))


def accumulate_gradients(params, losses, workers: int = 1, pool=None) -> torch.Tensor:
    """Set each parameter's ``.grad`` to the gradient of the sum of ``losses`` (zero-argument
    callables, one micro-batch each) and return that sum.

    With ``workers`` > 1 the micro-batches are split into that many contiguous chunks run in
    ``pool``'s threads at one intra-op thread each; chunk sums are added in chunk order, so a
    run is repeatable for a given thread count (and equal to the one-thread sum up to rounding).
    """
    if workers <= 1 or len(losses) == 1:
        chunks = [_summed(params, losses)]
    else:
        threads = torch.get_num_threads()
        size = -(-len(losses) // workers)
        torch.set_num_threads(1)  # worker threads take this setting when they start
        try:
            chunks = list(pool.map(lambda part: _summed(params, part),
                                   [losses[i:i + size] for i in range(0, len(losses), size)]))
        finally:
            torch.set_num_threads(threads)
    for i, p in enumerate(params):
        parts = [c[0][i] for c in chunks if c[0][i] is not None]
        p.grad = sum(parts[1:], parts[0]) if parts else None
    return sum(c[1] for c in chunks)


def _rows_per_pass(model, cfg: TTTConfig, length: int, device) -> int:
    """Masked copies per forward/backward pass: ``cfg.batch_size`` on CPU; on CUDA the whole
    optimiser step, or as many rows as 60 % of the free memory holds (upper estimate: 80 bytes
    per token, channel and layer of saved activations)."""
    per_step = cfg.batch_size * cfg.grad_accum_steps
    if device.type != "cuda":
        return cfg.batch_size
    free, _ = torch.cuda.mem_get_info(device)
    per_row = 80 * length * model.embed_dim * (model.num_layers + 1)
    return int(max(1, min(per_step, free * 0.6 // per_row)))


def customize(model, sequence: str, cfg: TTTConfig | None = None, progress: bool = True,
              callback=None, homologs=None, **overrides) -> TTTResult:
    """Fine-tune ``model`` in place on ``sequence`` (test-time training).

    Parameters
    ----------
    model : a fair-esm ESM-2 model (from ``tttlab.load_model``).
    sequence : the protein (20 standard amino acids and X).
    cfg : a ``TTTConfig`` (default: ``preset_for(model)``, the loaded model's preset);
        ``overrides`` replace fields, e.g. ``steps=10``.
    progress : show a ``tqdm.auto`` bar.
    callback : ``f(step, model) -> dict | None`` called after step 0 and every optimiser step;
        returned items are added to that step's history (e.g. a downstream metric).
    homologs : ``None`` (the published single-sequence TTT), a list of sequences or a
        ``HomologSet``: each masked copy is then the target or a homolog (``engine.homologs``,
        ``cfg.homolog_target_share``). An MSA file or ``"auto"`` (a local search) is turned into a
        ``HomologSet`` by ``tttlab.homologs``; ``tttlab.customize`` accepts them directly.

    Returns
    -------
    TTTResult with per-step loss (mean over the step's micro-batches), wall time and, every
    ``eval_every`` steps, pseudo-perplexity. With ``cfg.trainable == "lora"`` the adapters stay
    in the model until ``reset_lora`` (``customized`` does it for you).
    """
    from tqdm.auto import tqdm

    cfg = cfg or preset_for(model)
    if overrides:
        from dataclasses import replace

        cfg = replace(cfg, **overrides)
    sequence = check_sequence(sequence)
    device = model_device(model)
    tokens = encode(model.alphabet, sequence, device)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    homologs = None if homologs is None else HomologSet.of(homologs)
    if homologs is not None and not len(homologs):
        import warnings

        warnings.warn(f"no usable homologs ({homologs.source}): single-sequence TTT", stacklevel=2)
    sampler = None if not homologs else HomologSampler(model.alphabet, tokens, homologs, cfg)
    saved = _training_state(model)  # put back on exit, even on error
    params = _select_trainable(model, cfg)
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    result = TTTResult(sequence, cfg, n_homologs=len(homologs) if homologs else 0,
                       homolog_source=homologs.source if homologs is not None else None)
    sign = 1.0 if cfg.keep_best_mode == "min" else -1.0  # compare sign * value, lower wins
    best = (float("inf"), None)
    start = time.perf_counter()

    def record(step, loss):
        nonlocal best
        entry = {"step": step, "loss": loss, "seconds": round(time.perf_counter() - start, 3)}
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps):
            entry["pseudo_perplexity"] = pseudo_perplexity(model, sequence, amp=cfg.amp)
            model.train()
        if callback is not None:
            entry.update(callback(step, model) or {})
            model.train()
        if cfg.keep_best:
            value = entry.get(cfg.keep_best_by)
            if step == 0 and value is None:
                raise ValueError(f"keep_best_by={cfg.keep_best_by!r} is not in step 0's record "
                                 f"(it has {', '.join(entry)}): the callback must return it")
            if value is not None and sign * float(value) < best[0]:  # ties keep the earlier step
                best = (sign * float(value), (step, snapshot(model)))
        result.history.append(entry)

    # rows per forward pass: the published micro-batch on CPU, where micro-batches run side by
    # side on the cores (cpu_workers); on CUDA the whole step at once (same mean loss, same
    # gradient up to rounding, far fewer kernel launches)
    per_step = cfg.batch_size * cfg.grad_accum_steps
    rows = _rows_per_pass(model, cfg, min(tokens.numel(), cfg.crop_size), device)
    workers = cpu_workers(device, -(-per_step // rows))
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    model.train()
    try:
        record(0, None)
        for step in tqdm(range(1, cfg.steps + 1), disable=not progress, desc="TTT",
                         leave=False):
            losses = _micro_batch_losses(model, tokens, cfg, rows, generator, sampler)
            total = accumulate_gradients(params, losses, workers, pool)
            opt.step()
            opt.zero_grad(set_to_none=True)
            record(step, float(total) * cfg.batch_size / per_step)
    finally:
        if pool is not None:
            pool.shutdown()
        opt.zero_grad(set_to_none=True)  # no TTT gradients (or their memory) left behind
        _restore_training_state(model, saved)
    if cfg.keep_best and best[1] is not None:
        result.best_step = best[1][0]
        restore(model, best[1][1])
    result.seconds = time.perf_counter() - start
    return result


def _training_state(model) -> dict:
    """What ``customize`` changes besides the weights: which parameters train, each module's
    train/eval mode, and the gradients the caller already holds."""
    return {"requires": {p: p.requires_grad for p in model.parameters()},
            "modes": {m: m.training for m in model.modules()},
            "grads": {p: p.grad for p in model.parameters() if p.grad is not None}}


def _restore_training_state(model, saved: dict) -> None:
    for p, flag in saved["requires"].items():
        p.requires_grad_(flag)
        p.grad = saved["grads"].get(p)  # the caller's own gradients, untouched
    for m in model.modules():  # LoRA adapters added by customize follow their model's mode
        m.train(saved["modes"].get(m, model.training))


def _select_trainable(model, cfg: TTTConfig) -> list[torch.nn.Parameter]:
    """The parameters TTT trains (LoRA adapters, added here, or ``trainable_parameters``), the
    only ones left with ``requires_grad``."""
    params = _add_lora(model, cfg) if cfg.trainable == "lora" else trainable_parameters(model, cfg)
    keep = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return params


def _micro_batch_loss(model, cfg, batch, corrupted, selected, weight, padded=False):
    with autocast_for(model_device(model), cfg.amp):
        return _loss(model, batch, corrupted, selected, cfg, padded) * weight


def _micro_batch_losses(model, tokens, cfg: TTTConfig, rows: int, generator,
                        sampler: HomologSampler | None = None) -> list:
    """One optimiser step's micro-batches as loss functions (``accumulate_gradients``): crops and
    masks drawn here, in order, so the draws are the same whatever the threading.

    ProteinTTT calls backward() on each micro-batch's mean loss without scaling, so a step's
    gradient is the SUM over its grad_accum_steps micro-batches (proteinttt/base.py); the weight
    n / batch_size keeps that when one pass holds n rows. With a ``sampler`` the rows are the
    target and its homologs (``engine.homologs``)."""
    device = tokens.device
    per_step = cfg.batch_size * cfg.grad_accum_steps
    losses = []
    for first in range(0, per_step, rows):
        n = min(rows, per_step - first)
        batch = (crop_copies(tokens, n, cfg.crop_size, generator, device, cfg.crop)
                 if sampler is None else sampler.batch(n, generator))
        corrupted, selected = corrupt(batch, model.alphabet, cfg, generator)
        losses.append(partial(_micro_batch_loss, model, cfg, batch, corrupted, selected,
                              n / cfg.batch_size, sampler is not None))
    return losses


@contextmanager
def customized(model, sequence: str, cfg: TTTConfig | None = None, progress: bool = True,
               callback=None, homologs=None, **overrides):
    """``with customized(model, seq, cfg) as result:`` -- the model is customised to ``seq``
    inside the block and restored bit for bit on exit, even when the block raises."""
    state = snapshot(model)
    modes = {m: m.training for m in model.modules()}
    try:
        yield customize(model, sequence, cfg, progress=progress, callback=callback,
                        homologs=homologs, **overrides)
    finally:
        reset_lora(model)
        restore(model, state)
        for m, flag in modes.items():  # each submodule's own mode, not one flag for all
            m.train(flag)
