"""ipywidgets explorers for the notebooks. Each takes the model and data it needs, runs TTT or scoring
only when the user presses Run (``interact_manual``), and draws with ``tttlab.plots``.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------- fitness
def fitness_explorer(model, assays, model_name: str = "tttlab-mini", steps: int = 30,
                     max_variants: int = 1000, seed: int = 0,
                     methods=("masked_marginals", "wt_marginals")):
    """Pick an assay (shared ids, paths or loaded ``DMSAssay``s), the TTT steps and the scoring
    method, press Run: the assay (a fixed-seed subsample of ``max_variants``) is scored before
    and after TTT (model restored afterwards) and ``plots.fitness_figure`` is drawn.

    ``pseudo_likelihood`` is left out of ``methods`` by default: it costs L forward passes per
    variant. Returns the ``ipywidgets.interactive`` widget (manual mode: a Run button; display
    it); ``widget.result`` is the last run's summary dict.
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt

    from tttlab.engine.config import preset
    from tttlab.studies.fitness import DMSAssay, load_dms, score_assays
    from tttlab.present.plots import fitness_figure

    loaded = {}
    names = [a.name if isinstance(a, DMSAssay) else str(a) for a in assays]
    for name, a in zip(names, assays):
        if isinstance(a, DMSAssay):
            loaded[name] = a

    def run(assay, steps, method):
        if assay not in loaded:
            loaded[assay] = load_dms(assay)
        data = loaded[assay].subsample(max_variants, seed)
        cfg = preset(model_name, steps=steps, seed=seed)
        result = score_assays(model, [data], cfg, method)[0]
        summary = result.summary(seed=seed)
        print(f"{assay}: {summary['n_variants']} variants, {steps} TTT steps, {method}: "
              f"Spearman {summary['spearman_before']} -> {summary['spearman_after']}, "
              f"pseudo-perplexity {summary['pseudo_perplexity_before']} -> "
              f"{summary['pseudo_perplexity_after']} ({summary['seconds']:.0f} s; model restored)")
        fitness_figure(result.variants, result.marginals_before, result.marginals_after,
                       result.wild_type, method, title=assay)
        plt.show()
        return summary

    return w.interactive(
        run, {"manual": True, "manual_name": "Run"},
        assay=w.Dropdown(options=names, description="assay"),
        steps=w.IntSlider(value=steps, min=0, max=60, step=5, description="TTT steps",
                          continuous_update=False),
        method=w.Dropdown(options=list(methods), description="method"))


# -------------------------------------------------------------------------- structure

# --------------------------------------------------------------------------- function

# ---------------------------------------------------------------------- your protein
def short_errors(enable: bool = True) -> bool:
    """In IPython/Jupyter, show input errors raised inside tttlab (``ValueError``,
    ``FileNotFoundError``) as one red line instead of a traceback; other errors keep their full
    traceback. The cell still fails, so "Run all" stops there. Returns False outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the notebooks extra
        return False
    shell = get_ipython()
    if shell is None:
        return False
    if not enable:
        shell.set_custom_exc((), None)
        return True
    from pathlib import Path

    package = str(Path(__file__).resolve().parents[1])  # the whole tttlab package

    def handler(self, etype, value, tb, tb_offset=None):
        last = tb
        while last is not None and last.tb_next is not None:
            last = last.tb_next
        origin = last.tb_frame.f_code.co_filename if last is not None else ""
        if origin.startswith(package):
            message = str(value).splitlines()[0] if str(value) else etype.__name__
            self._showtraceback(etype, value, [f"\x1b[0;31m{etype.__name__}\x1b[0m: {message}"])
        else:
            self.showtraceback((etype, value, tb), tb_offset=tb_offset)

    shell.set_custom_exc((ValueError, FileNotFoundError), handler)
    return True


def your_protein_explorer(model, seq: str, model_name: str = "tttlab-mini", steps: int = 30,
                          lr: float | None = None, method: str = "all", eval_every: int = 5):
    """Sliders for the TTT settings (steps, learning rate: ``lr``, default ``model_name``'s preset;
    method: all weights or LoRA) and a Run button; each run customises ``model`` to ``seq`` inside ``customized`` (restored after),
    prints pseudo-perplexity before/after and draws ``plots.ttt_summary_figure``.

    Returns the ``ipywidgets.interactive`` widget (display it); ``widget.result`` holds the last
    run's pseudo-perplexities.
    """
    import ipywidgets as w
    import matplotlib.pyplot as plt

    from tttlab.engine.config import preset
    from tttlab.present.plots import ttt_summary_figure
    from tttlab.engine.scoring import check_sequence, masked_marginals, pseudo_perplexity, substitution_scores
    from tttlab.engine.ttt import customized

    seq = check_sequence(seq)
    lr = preset(model_name).lr if lr is None else lr
    start = masked_marginals(model, seq)
    before = substitution_scores(start, seq)
    ppl_before = pseudo_perplexity(model, seq, marginals=start)

    def run(steps, lr, method):
        cfg = preset(model_name, steps=steps, lr=lr, trainable=method,
                     eval_every=min(eval_every, steps) if steps else 0)
        with customized(model, seq, cfg) as result:
            end = masked_marginals(model, seq)
        ppl_after = pseudo_perplexity(model, seq, marginals=end)
        print(f"pseudo-perplexity {ppl_before:.3f} -> {ppl_after:.3f} after {steps} steps "
              f"(lr {lr:.1e}, {method}); model restored")
        ttt_summary_figure(result.table(), before, substitution_scores(end, seq), seq)
        plt.show()
        return {"pseudo_perplexity_before": ppl_before, "pseudo_perplexity_after": ppl_after}

    style = {"description_width": "initial"}
    return w.interactive(
        run, {"manual": True, "manual_name": "Run TTT"},
        steps=w.IntSlider(value=steps, min=0, max=100, step=1, description="steps", style=style),
        lr=w.FloatLogSlider(value=lr, base=10, min=-6, max=0, step=0.25, readout_format=".1e",
                            description="learning rate", style=style),
        method=w.Dropdown(options=[("all weights", "all"), ("LoRA adapters", "lora")],
                          value=method, description="method", style=style))
