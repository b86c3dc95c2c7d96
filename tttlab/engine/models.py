"""The one loading door for ESM-2 models (fair-esm names, local ``.pt`` files, ``tttlab-mini``) and the
fast attention path: fair-esm's rotary self-attention recomputed with ``F.scaled_dot_product_attention``.

Loading follows ``esm.pretrained`` (Lin et al., Science 2023) with ``weights_only=True`` and an allow-list.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import esm
import torch

from tttlab.common.files import atomic_write
from tttlab.engine.fastpath import set_fast_attention, set_torch_compile

MINI_NAME = "tttlab-mini"
#: the bundled model files: ``data/models/`` in a checkout, installed as ``tttlab/bundled/`` by
#: ``pip install .`` (pyproject.toml maps that folder into the package as package data)
_PACKAGE = Path(__file__).resolve().parents[1]
PACKAGE_MODELS_DIR = next((d for d in (_PACKAGE / "bundled", _PACKAGE.parent / "data" / "models")
                           if d.is_dir()), _PACKAGE / "bundled")
MINI_PATH = PACKAGE_MODELS_DIR / "esm2_tttlab_mini.pt"

#: every ESM-2 checkpoint fair-esm 2.0.0 can download by name
ESM2_NAMES = (
    "esm2_t6_8M_UR50D",
    "esm2_t12_35M_UR50D",
    "esm2_t30_150M_UR50D",
    "esm2_t33_650M_UR50D",
    "esm2_t36_3B_UR50D",
    "esm2_t48_15B_UR50D",
)
_SAFE_GLOBALS = [argparse.Namespace]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``
    (a CUDA device on a machine without CUDA is a one-line ``ValueError``)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r} ({str(err).splitlines()[0]})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but this torch has no CUDA device "
                         "(use --device cpu)")
    return device


def _read_checkpoint(path: Path) -> dict:
    """``torch.load(path, weights_only=True)`` (always passed, so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
    cannot turn it off) with one-line errors for empty, foreign or code-carrying files."""
    import pickle

    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):
            data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: refused, not a weights-only checkpoint ({first[:160]})") from None
    except (EOFError, RuntimeError, OSError, KeyError, ValueError) as err:  # e.g. text bytes
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:160] if str(err) else 'empty file'})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a fair-esm checkpoint (holds a {type(data).__name__})")
    return data


def local_path(name_or_path: str | Path) -> Path:
    """The file of a local model: the bundled checkpoint for ``"tttlab-mini"``, else the path."""
    return MINI_PATH if str(name_or_path) == MINI_NAME else Path(name_or_path).expanduser()


def _load_local(path: Path, contact_regression: bool = True):
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if not path.stem.startswith("esm2"):
        raise ValueError(f"{path.name}: fair-esm loads ESM-2 checkpoints only from files named esm2*.pt")
    data = _read_checkpoint(path)
    if not {"cfg", "model"} <= data.keys():
        raise ValueError(f"{path}: not a fair-esm checkpoint (needs 'cfg' and 'model' entries, has "
                         f"{', '.join(map(str, list(data)[:5])) or 'none'})")
    regression = path.with_name(path.stem + "-contact-regression.pt")
    if contact_regression and regression.is_file():
        # fair-esm's own local loader would torch.load it without weights_only
        try:
            return esm.pretrained.load_model_and_alphabet_core(path.stem, data,
                                                               _read_checkpoint(regression))
        except RuntimeError as err:
            if "contact_head.regression" not in str(err):
                raise
            raise ValueError(f"{regression}: this contact regression was fitted for a model of "
                             f"another shape, not {path.name}; refit it with `tttlab structure "
                             f"fit-head --model {path}` or delete it") from None
    # fair-esm 2.0.0 insists on the regression file; without it load the bare LM (no contact head)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, alphabet, state = esm.pretrained._load_model_and_alphabet_core_v2(data)
        model.load_state_dict(state, strict=False)
    return model, alphabet


_MODEL_URL = "https://dl.fbaipublicfiles.com/fair-esm/models/{}.pt"
_REGRESSION_URL = "https://dl.fbaipublicfiles.com/fair-esm/regression/{}-contact-regression.pt"
#: seconds a download may wait on the network before it counts as offline
DOWNLOAD_TIMEOUT = 30


def hub_paths(name: str) -> tuple[Path, Path]:
    """Where fair-esm's hub cache keeps ``name``'s weights and contact regression:
    ``$TORCH_HOME/hub/checkpoints/{name}.pt`` and ``{name}-contact-regression.pt``."""
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    return hub / f"{name}.pt", hub / f"{name}-contact-regression.pt"


def _download(url: str, path: Path, name: str) -> None:
    """Fetch ``url`` to ``path`` (torch.hub's downloader, partial files never left behind) within
    ``DOWNLOAD_TIMEOUT`` seconds of network silence; offline is one line naming ``path``."""
    import socket

    path.parent.mkdir(parents=True, exist_ok=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT)
    try:
        torch.hub.download_url_to_file(url, str(path), progress=True)
    except (OSError, RuntimeError) as err:  # URLError and timeouts are OSErrors
        reason = getattr(err, "reason", err)
        raise RuntimeError(f"{name}: {path} is missing and the download failed ({reason}); "
                           f"offline? put the file from {url} there, or pass a local .pt path"
                           ) from None
    finally:
        socket.setdefaulttimeout(previous)


def _load_hub(name: str):
    """fair-esm's ``load_model_and_alphabet_hub`` with every file read weights-only: the files in
    the hub cache (``hub_paths``), downloaded first when missing."""
    weights, regression = hub_paths(name)
    for path, url in ((weights, _MODEL_URL.format(name)), (regression, _REGRESSION_URL.format(name))):
        if not path.is_file():
            _download(url, path, name)
    return esm.pretrained.load_model_and_alphabet_core(name, _read_checkpoint(weights),
                                                      _read_checkpoint(regression))


def load_model(name_or_path: str | Path = MINI_NAME, device=None, fast_attention: bool = True,
               torch_compile: bool = False, contact_regression: bool = True):
    """Load an ESM-2 model and its alphabet, in eval mode, on ``device``.

    Parameters
    ----------
    name_or_path : ``"tttlab-mini"`` (bundled, offline), a fair-esm ESM-2 name such as
        ``"esm2_t12_35M_UR50D"`` (downloaded and cached by torch.hub), or a local ``esm2*.pt`` path.
    device : ``None`` picks CUDA when available, else CPU.
    fast_attention : use the fast path (fused attention, one-kernel GELU; same results to ~1e-6;
        attention maps and contacts still come from the stock module).
    torch_compile : compile the transformer layers with ``torch.compile`` (off by default; see
        ``set_torch_compile``).
    contact_regression : ``False`` ignores a ``-contact-regression.pt`` beside a local checkpoint
        (the model then has an unfitted contact head; ``tttlab structure fit-head`` replaces it).

    Returns
    -------
    (model, alphabet)
    """
    name = str(name_or_path)
    if name == MINI_NAME:
        if not MINI_PATH.is_file():
            raise FileNotFoundError(f"{MINI_PATH} is missing; rebuild it with `tttlab pretrain`")
        model, alphabet = _load_local(MINI_PATH, contact_regression)
    elif name.endswith(".pt") or Path(name).is_file():
        model, alphabet = _load_local(Path(name).expanduser(), contact_regression)
    elif name in ESM2_NAMES:
        model, alphabet = _load_hub(name)
    else:
        raise ValueError(f"unknown model {name!r}: use {MINI_NAME!r}, a local esm2*.pt file, or one of "
                         + ", ".join(ESM2_NAMES))
    model = model.eval().to(resolve_device(device))
    model.model_name = name  # picks the TTT preset when none is given (config.preset_for)
    set_fast_attention(model, fast_attention)
    if torch_compile:
        set_torch_compile(model)
    return model, alphabet


def build_esm2(num_layers=4, embed_dim=192, attention_heads=12, seed=0, fast_attention=True):
    """A randomly initialised ESM-2 (ESM-1b alphabet) for tests, benchmarks and pretraining."""
    torch.manual_seed(seed)
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    model = esm.model.esm2.ESM2(num_layers=num_layers, embed_dim=embed_dim,
                                attention_heads=attention_heads, alphabet=alphabet).eval()
    set_fast_attention(model, fast_attention)
    return model, alphabet


def save_fair_esm_checkpoint(model, path: str | Path, dtype: torch.dtype | None = None) -> None:
    """Write ``model`` in the format ``esm.pretrained.load_model_and_alphabet_local`` reads
    (``dtype=torch.float16`` halves the file; loading casts back to the model's float32)."""
    cfg = argparse.Namespace(encoder_layers=model.num_layers, encoder_embed_dim=model.embed_dim,
                             encoder_attention_heads=model.attention_heads,
                             token_dropout=model.token_dropout)
    state = {"encoder." + k: v.detach().cpu().to(dtype or v.dtype).clone()
             for k, v in model.state_dict().items() if not k.startswith("contact_head.regression")}
    _save({"cfg": {"model": cfg}, "model": state}, Path(path))


def save_contact_regression(model, path: str | Path) -> None:
    """Write the contact head's logistic regression as ``<stem>-contact-regression.pt``."""
    reg = model.contact_head.regression
    _save({"model": {"contact_head.regression.weight": reg.weight.detach().cpu().clone(),
                            "contact_head.regression.bias": reg.bias.detach().cpu().clone()}},
                 Path(path))


def _save(obj, path: Path) -> None:
    """``torch.save``, atomically (``common.files.atomic_write``)."""
    atomic_write(Path(path), lambda handle: torch.save(obj, handle))
