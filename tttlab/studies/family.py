"""Family-aware TTT in one call: ``customize`` and ``customized`` that also take the homologs as
an MSA file or ``"auto"`` (a local jackhmmer search), resolved by ``data.homologs.homologs`` with
the run's ``homolog_region``. These are ``tttlab.customize`` and ``tttlab.customized``."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

from tttlab.data.homologs import homologs as homologs_of
from tttlab.engine import ttt
from tttlab.engine.config import preset_for


def _resolved(model, sequence, cfg, homologs, overrides):
    if homologs is None:
        return None
    cfg = replace(cfg or preset_for(model), **overrides)
    return homologs_of(sequence, homologs, cfg.homolog_region)


def customize(model, sequence: str, cfg=None, progress: bool = True, callback=None,
              homologs=None, **overrides):
    """``engine.ttt.customize``; ``homologs`` may also be an MSA file path or ``"auto"``."""
    return ttt.customize(model, sequence, cfg, progress, callback,
                         homologs=_resolved(model, sequence, cfg, homologs, overrides), **overrides)


@contextmanager
def customized(model, sequence: str, cfg=None, progress: bool = True, callback=None,
               homologs=None, **overrides):
    """``engine.ttt.customized``; ``homologs`` may also be an MSA file path or ``"auto"``."""
    family = _resolved(model, sequence, cfg, homologs, overrides)
    with ttt.customized(model, sequence, cfg, progress, callback, homologs=family,
                        **overrides) as result:
        yield result
