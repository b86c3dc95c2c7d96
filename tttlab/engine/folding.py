"""ESMFold with a language model that test-time training can customise.

ESMFold (Lin et al., Science 2023) folds a protein from the hidden states of every layer of its
ESM-2 language model. Here the folding trunk is Hugging Face ``transformers``'
``EsmForProteinFolding`` (pure PyTorch, no OpenFold; ``pip install 'tttlab[fold]'``) and its
language model is a fair-esm ``ESM2`` built from the same weights, so the TTT engine
(``engine.ttt``: masking, LoRA through peft, bit-exact reset) trains it unchanged. ESMFold carries
no masked-LM head; the head comes from the matching ESM-2 masked LM (``lm_head=``: by default
``esm2_t36_3B_UR50D``, or a local HF ``EsmForMaskedLM`` folder or fair-esm ``.pt`` of the same size).

Precision: the language model is kept in float32 (ESMFold ships it in fp16; the cast is exact),
so LoRA updates of 4e-4 x gradient are not rounded away; on CUDA its matrix products run under
bf16 autocast as everywhere in the engine. The trunk keeps the dtype it was loaded in.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tttlab.common.sequences import check_sequence
from tttlab.engine.fastpath import set_fast_attention
from tttlab.engine.models import load_model, resolve_device
from tttlab.engine.scoring import autocast_for

#: folding models known by name -> (Hugging Face hub id, default masked-LM head)
FOLD_MODELS = {"esmfold_v1": ("facebook/esmfold_v1", "esm2_t36_3B_UR50D")}

#: fair-esm ESM2 parameter name -> Hugging Face EsmModel parameter name, per layer and global
_LAYER_NAMES = {
    "self_attn.q_proj": "attention.self.query", "self_attn.k_proj": "attention.self.key",
    "self_attn.v_proj": "attention.self.value", "self_attn.out_proj": "attention.output.dense",
    "self_attn_layer_norm": "attention.LayerNorm", "fc1": "intermediate.dense",
    "fc2": "output.dense", "final_layer_norm": "LayerNorm",
}
_HEAD_NAMES = ("dense.weight", "dense.bias", "layer_norm.weight", "layer_norm.bias", "bias")


def _transformers():
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("folding needs Hugging Face transformers: pip install 'tttlab[fold]'"
                          ) from err
    return transformers


@contextmanager
def _quiet_loading():
    """transformers' per-tensor "Loading weights" bar and log chatter off while we load (download
    bars, from huggingface_hub, stay)."""
    from transformers.utils import logging as hf_logging

    bar, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


@dataclass
class Prediction:
    """One predicted structure: the PDB text (B-factors = per-atom pLDDT, 0-100), per-residue
    pLDDT (C-alpha), and the mean over every atom of the PDB, the confidence ProteinTTT picks steps
    by (``proteinttt/models/esmfold.py``: mean B-factor of the predicted PDB)."""

    sequence: str
    pdb: str
    plddt: np.ndarray  #: per residue (C-alpha), 0-100
    mean_plddt: float  #: over the atoms of the PDB, 0-100
    ptm: float

    def atoms(self):
        """The prediction as a biotite ``AtomArray`` (first model)."""
        import io

        import biotite.structure.io.pdb as pdb

        return pdb.PDBFile.read(io.StringIO(self.pdb)).get_structure(model=1)


class FoldingModel:
    """ESMFold's trunk (``trunk``, a transformers ``EsmForProteinFolding``) folding from the hidden
    states of ``language_model``, a fair-esm ``ESM2`` with a masked-LM head: customise the latter
    with ``tttlab.customized`` and ``predict`` folds with the customised model."""

    def __init__(self, trunk, language_model, name: str):
        self.trunk = trunk
        self.language_model = language_model
        self.name = name
        trunk.esm = language_model  # one module tree: .to(), .parameters() cover both
        trunk.compute_language_model_representations = self._representations

    @property
    def device(self) -> torch.device:
        return next(self.trunk.parameters()).device

    def parameters(self):
        """Every weight: trunk and language model."""
        return self.trunk.parameters()

    def set_chunk_size(self, chunk_size: int | None) -> None:
        """Run the trunk's triangular attention in chunks of ``chunk_size`` rows (less memory on long
        proteins, same result); ``None``: no chunking."""
        self.trunk.trunk.set_chunk_size(chunk_size)

    def _representations(self, esmaa: torch.Tensor) -> torch.Tensor:
        """``EsmForProteinFolding.compute_language_model_representations`` on the fair-esm model:
        BOS + residues + EOS (padding after), every layer's hidden state, B x L x layers+1 x C."""
        lm = self.language_model
        alphabet = lm.alphabet
        bos = esmaa.new_full((len(esmaa), 1), alphabet.cls_idx)
        pad = esmaa.new_full((len(esmaa), 1), alphabet.padding_idx)
        tokens = torch.cat([bos, esmaa, pad], dim=1)
        tokens[range(len(tokens)), (tokens != alphabet.padding_idx).sum(1)] = alphabet.eos_idx
        with autocast_for(tokens.device):
            out = lm(tokens, repr_layers=range(lm.num_layers + 1))["representations"]
        return torch.stack([out[i].float() for i in range(lm.num_layers + 1)], dim=2)[:, 1:-1]

    @torch.no_grad()
    def predict(self, sequence: str) -> Prediction:
        """Fold ``sequence`` with the language model as it is now (eval mode for the call)."""
        sequence = check_sequence(sequence)
        lm, was_training = self.language_model, self.language_model.training
        lm.eval()
        try:
            out = self.trunk.infer(sequence)
        finally:
            lm.train(was_training)
        pdb = self.trunk.output_to_pdb(out)[0]
        plddt = out["plddt"][0].float().cpu().numpy() * 100  # HF: 0-1 per atom37 slot
        exists = out["atom37_atom_exists"][0].float().cpu().numpy() > 0
        return Prediction(sequence=sequence, pdb=pdb, plddt=plddt[:, 1],
                          mean_plddt=float(plddt[exists].mean()), ptm=float(out["ptm"]))


# ------------------------------------------------------------------------------ loading
def language_model_from_hf(esm_model, config):
    """A fair-esm ``ESM2`` holding the weights of a transformers ``EsmModel`` (``config``: its
    ``EsmConfig``), float32, with the fast path on. The masked-LM head is left as initialised:
    ``load_lm_head`` fills it."""
    import esm

    if config.position_embedding_type != "rotary" or getattr(config, "emb_layer_norm_before", False):
        raise ValueError("only ESM-2 language models (rotary, no embedding layer norm) can be "
                         "customised")
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    vocab = list(getattr(config, "vocab_list", None) or alphabet.all_toks)
    if vocab != list(alphabet.all_toks):
        raise ValueError("the folding model's vocabulary is not ESM-2's (ESM-1b alphabet)")
    lm = esm.model.esm2.ESM2(num_layers=config.num_hidden_layers, embed_dim=config.hidden_size,
                             attention_heads=config.num_attention_heads, alphabet=alphabet,
                             token_dropout=config.token_dropout)
    for module in lm.modules():  # ESM-2 uses 1e-5; a config may say otherwise
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = config.layer_norm_eps
    source = {k: v.float() for k, v in esm_model.state_dict().items()}
    state = {"embed_tokens.weight": source["embeddings.word_embeddings.weight"],
             "emb_layer_norm_after.weight": source["encoder.emb_layer_norm_after.weight"],
             "emb_layer_norm_after.bias": source["encoder.emb_layer_norm_after.bias"]}
    for i in range(config.num_hidden_layers):
        for ours, theirs in _LAYER_NAMES.items():
            for kind in ("weight", "bias"):
                state[f"layers.{i}.{ours}.{kind}"] = source[f"encoder.layer.{i}.{theirs}.{kind}"]
    missing, _ = lm.load_state_dict(state, strict=False)
    left = [k for k in missing if not k.startswith(("lm_head.", "contact_head."))
            and not k.endswith("rot_emb.inv_freq")]
    if left:
        raise ValueError(f"folding model's language model lacks {left[0]}")
    set_fast_attention(lm.eval())
    return lm


def _head_state(source, device) -> dict[str, torch.Tensor]:
    """The masked-LM head of ``source`` (fair-esm names: dense, layer_norm, bias): a transformers
    ``EsmForMaskedLM`` or a local folder of one, or anything ``load_model`` reads (an ESM-2 name, a
    fair-esm ``.pt``)."""
    if isinstance(source, torch.nn.Module):
        head = source.lm_head.state_dict()
        return {k: head[k] for k in _HEAD_NAMES}
    path = Path(str(source)).expanduser()
    if path.is_dir():
        transformers = _transformers()
        try:
            with _quiet_loading():
                mlm = transformers.EsmForMaskedLM.from_pretrained(str(path), dtype=torch.float32)
        except (OSError, ValueError) as err:
            raise ValueError(f"--lm-head {source}: not a transformers EsmForMaskedLM folder "
                             f"({str(err).splitlines()[0][:160]})") from None
        head = mlm.lm_head.state_dict()
        return {k: head[k] for k in _HEAD_NAMES}
    model, _ = load_model(str(source), device="cpu")
    head = model.lm_head.state_dict()
    return {k: head[k] for k in _HEAD_NAMES}


def load_lm_head(lm, source) -> None:
    """Copy the masked-LM head of ``source`` (an ``EsmForMaskedLM``, a folder of one, an ESM-2 name
    or a fair-esm ``.pt``) into ``lm``; the output
    projection stays tied to ``lm``'s token embedding. A head of other dimensions is a one-line
    ``ValueError``."""
    head = _head_state(source, "cpu")
    ours = lm.lm_head.state_dict()
    if any(head[k].shape != ours[k].shape for k in _HEAD_NAMES):
        dim, vocab = head["dense.weight"].shape[1], head["bias"].shape[0]
        raise ValueError(f"LM head {source}: width {dim} and vocabulary {vocab} do not match the "
                         f"folding model's language model (width {lm.embed_dim}, vocabulary "
                         f"{lm.alphabet_size})")
    with torch.no_grad():
        for k in _HEAD_NAMES:
            ours[k].copy_(head[k])


def _load_trunk(name_or_dir: str):
    transformers = _transformers()
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        where = str(path)
    elif name_or_dir in FOLD_MODELS:
        where = FOLD_MODELS[name_or_dir][0]
    else:
        raise ValueError(f"unknown folding model {name_or_dir!r}: use one of "
                         f"{', '.join(FOLD_MODELS)} or a folder saved with save_pretrained")
    cls = transformers.EsmForProteinFolding
    try:
        try:  # the local cache first: no network when the weights are there
            with _quiet_loading():
                return cls.from_pretrained(where, dtype=torch.float32, local_files_only=True)
        except OSError:
            if path.is_dir():
                raise
            with _quiet_loading():
                return cls.from_pretrained(where, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as err:
        msg = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise RuntimeError(f"cannot load folding model {name_or_dir}: {msg}") from None


def load_folding_model(name_or_dir: str = "esmfold_v1", lm_head=None, device=None,
                       chunk_size: int | None = None) -> FoldingModel:
    """ESMFold for TTT: the trunk from the transformers cache (``"esmfold_v1"``, downloaded from
    ``facebook/esmfold_v1`` when missing) or a local ``save_pretrained`` folder, its language model
    as a fair-esm ``ESM2`` with the masked-LM head of ``lm_head`` (default for ``esmfold_v1``:
    ``esm2_t36_3B_UR50D``; required for a local folder), in eval mode on ``device``.

    The language model's ``model_name`` is ``"esmfold_v1"``, so ``preset_for`` gives the published
    ESMFold recipe (``preset("esmfold_v1")``)."""
    name = str(name_or_dir)
    if lm_head is None:
        if name not in FOLD_MODELS:
            raise ValueError(f"{name}: give the masked-LM head of its language model (lm_head= / "
                             "--lm-head: a transformers EsmForMaskedLM folder or an ESM-2 .pt)")
        lm_head = FOLD_MODELS[name][1]
    trunk = _load_trunk(name)
    lm = language_model_from_hf(trunk.esm, trunk.config)
    load_lm_head(lm, lm_head)
    lm.model_name = "esmfold_v1"
    model = FoldingModel(trunk.eval(), lm, name)
    model.trunk.to(resolve_device(device))
    if chunk_size:
        model.set_chunk_size(chunk_size)
    return model


def build_folding_model(layers: int = 2, width: int = 32, heads: int = 4, trunk_blocks: int = 1,
                        seed: int = 0):
    """A small random-weight ``EsmForProteinFolding`` of the real architecture and a matching random
    ``EsmForMaskedLM`` (same ESM-2 size), for tests and CI: their structures mean nothing."""
    transformers = _transformers()
    import esm

    vocab = list(esm.data.Alphabet.from_architecture("ESM-1b").all_toks)
    esm_args = dict(vocab_size=len(vocab), hidden_size=width, num_hidden_layers=layers,
                    num_attention_heads=heads, intermediate_size=4 * width,
                    position_embedding_type="rotary", token_dropout=True, mask_token_id=32,
                    pad_token_id=1, emb_layer_norm_before=False, layer_norm_eps=1e-5,
                    max_position_embeddings=1026, vocab_list=vocab)
    trunk = {"num_blocks": trunk_blocks, "sequence_state_dim": 64, "pairwise_state_dim": 16,
             "sequence_head_width": 16, "pairwise_head_width": 8, "position_bins": 8,
             "chunk_size": None,
             "structure_module": {"ipa_dim": 16, "num_angles": 7, "num_blocks": 2,
                                  "num_heads_ipa": 4, "pairwise_dim": 16, "resnet_dim": 16,
                                  "sequence_dim": 32}}
    torch.manual_seed(seed)
    fold = transformers.EsmForProteinFolding(transformers.EsmConfig(
        is_folding_model=True, esmfold_config={"trunk": trunk, "fp16_esm": False,
                                               "lddt_head_hid_dim": 16}, **esm_args))
    mlm = transformers.EsmForMaskedLM(transformers.EsmConfig(**esm_args))
    return fold.eval(), mlm.eval()


def random_folding_model(device=None, **sizes) -> FoldingModel:
    """``build_folding_model(**sizes)`` ready to use: its random masked LM's head on a fair-esm
    copy of its language model. For demonstrations without weights: the structures mean nothing."""
    fold, mlm = build_folding_model(**sizes)
    lm = language_model_from_hf(fold.esm, fold.config)
    load_lm_head(lm, mlm)
    lm.model_name = "esmfold_v1"
    model = FoldingModel(fold, lm, "random ESMFold (tests and CI)")
    model.trunk.to(resolve_device(device))
    return model
