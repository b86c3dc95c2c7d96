"""ESMFold with a language model that test-time training can customise.

ESMFold (Lin et al., Science 2023) folds a protein from the hidden states of every layer of its
ESM-2 language model. Here it is Hugging Face ``transformers``' ``EsmForProteinFolding`` (pure
PyTorch, no OpenFold; ``pip install 'tttlab[fold]'``), untouched: TTT trains LoRA adapters inside its
own language model (``trunk.esm``), which ``EsmLanguageModel`` presents to the TTT engine
(``engine.ttt``: masking, peft LoRA, bit-exact reset) with the masked-LM head ESMFold lacks. The
head comes from the matching ESM-2 masked LM (``lm_head=``: by default ``esm2_t36_3B_UR50D``, or a
local transformers ``EsmForMaskedLM`` folder or fair-esm ``.pt`` of the same width).

Precision: the language model is kept in float32 (ESMFold ships it in fp16; the cast is exact), so
LoRA updates of 4e-4 x gradient are not rounded away; on CUDA its matrix products run under bf16
autocast as everywhere in the engine. The trunk keeps the dtype it was loaded in.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tttlab.common.sequences import check_sequence
from tttlab.engine.models import load_model, resolve_device
from tttlab.engine.scoring import autocast_for

#: folding models known by name -> (Hugging Face hub id, default masked-LM head)
FOLD_MODELS = {"esmfold_v1": ("facebook/esmfold_v1", "esm2_t36_3B_UR50D")}
#: the masked-LM head's tensors, named alike in transformers' EsmLMHead and fair-esm's RobertaLMHead
#: (the output projection is the token embedding in both)
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
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as hf_logging

    bar, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hub_level = hub_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    hub_logging.set_verbosity_error()  # offline: no "Retrying in 8s" lines before our one-line error
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        hub_logging.set_verbosity(hub_level)
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


class EsmLanguageModel(torch.nn.Module):
    """A transformers ``EsmModel`` (ESMFold's language model, shared, not copied) with a masked-LM
    head, in the interface the TTT engine uses: ``alphabet`` (fair-esm's ESM-1b alphabet, the same
    token ids), ``embed_tokens``, ``lm_head``, ``final_hidden``, ``lora_targets``, ``model(tokens)``.

    The head's output projection is the model's token embedding (tied, as in ESM-2). In training
    mode the transformer's dropout stays off: ESM-2 has none in fair-esm, the published code's model.
    """

    #: peft target: query, key, value and output projections of every attention block
    lora_targets = r".*attention\.(self\.(query|key|value)|output\.dense)"

    def __init__(self, esm_model, config):
        import esm
        from transformers.models.esm.modeling_esm import EsmLMHead

        super().__init__()
        alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
        vocab = list(getattr(config, "vocab_list", None) or alphabet.all_toks)
        if vocab != list(alphabet.all_toks) or config.vocab_size != len(alphabet):
            raise ValueError("the folding model's vocabulary is not ESM-2's (the ESM-1b alphabet)")
        self.esm = esm_model.float()  # fp16 in ESMFold: an exact cast
        self.lm_head = EsmLMHead(config).float()
        self.lm_head.decoder.weight = self.embed_tokens.weight
        self.alphabet = alphabet
        self.padding_idx, self.mask_idx = alphabet.padding_idx, alphabet.mask_idx
        self.embed_dim, self.num_layers = config.hidden_size, config.num_hidden_layers
        self.attention_heads = config.num_attention_heads
        self.alphabet_size = len(alphabet)

    @property
    def embed_tokens(self):
        return self.esm.embeddings.word_embeddings

    def train(self, mode: bool = True):
        super().train(mode)
        self.esm.eval()  # no dropout (LoRA adapters have none either)
        return self

    def final_hidden(self, tokens, rows=None, padded=None):
        """Hidden states after the last layer norm (B x T x C; with ``rows``, B x k token indices,
        those rows only)."""
        x = self.esm(input_ids=tokens, attention_mask=tokens.ne(self.padding_idx).long()
                     ).last_hidden_state
        return x if rows is None else x.gather(1, rows[..., None].expand(-1, -1, x.shape[-1]))

    def forward(self, tokens, repr_layers=(), need_head_weights=False, return_contacts=False):
        """``{"logits": B x T x vocabulary}``, as fair-esm's ``ESM2`` returns them."""
        return {"logits": self.lm_head(self.final_hidden(tokens))}


class FoldingModel:
    """ESMFold (``trunk``: a transformers ``EsmForProteinFolding``, or fair-esm's ``ESMFold``) and
    ``language_model``, its ESM-2 with a masked-LM head (an ``EsmLanguageModel``, or fair-esm's own
    ``ESM2``): customise the latter with ``tttlab.customized`` and ``predict`` folds with the
    customised model."""

    def __init__(self, trunk, language_model, name: str, plddt_scale: float = 100.0):
        self.trunk = trunk
        self.language_model = language_model
        self.name = name
        self.plddt_scale = plddt_scale  # transformers' pLDDT is 0-1, fair-esm's 0-100

    @property
    def device(self) -> torch.device:
        return next(self.trunk.parameters()).device

    def parameters(self):
        """Every weight: the trunk (with its language model) and the masked-LM head."""
        seen = set()
        for p in list(self.trunk.parameters()) + list(self.language_model.parameters()):
            if id(p) not in seen:
                seen.add(id(p))
                yield p

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every tensor by name (trunk's, then the head's as ``lm_head.*``)."""
        state = dict(self.trunk.state_dict())
        state.update({f"lm_head.{k}": v for k, v in self.language_model.lm_head.state_dict().items()})
        return state

    def to(self, device):
        self.trunk.to(device)
        self.language_model.to(device)
        return self

    def set_chunk_size(self, chunk_size: int | None) -> None:
        """Run the trunk's triangular attention in chunks of ``chunk_size`` rows (less memory on long
        proteins, same result); ``None``: no chunking."""
        (getattr(self.trunk, "set_chunk_size", None) or self.trunk.trunk.set_chunk_size)(chunk_size)

    @torch.no_grad()
    def predict(self, sequence: str) -> Prediction:
        """Fold ``sequence`` with the language model as it is now (eval mode for the call)."""
        sequence = check_sequence(sequence)
        lm, was_training = self.language_model, self.language_model.training
        lm.eval()
        try:
            with autocast_for(self.device):
                out = self.trunk.infer(sequence)
        finally:
            lm.train(was_training)
        pdb = self.trunk.output_to_pdb(out)[0]
        plddt = out["plddt"][0].float().cpu().numpy() * self.plddt_scale  # per atom37 slot
        exists = out["atom37_atom_exists"][0].float().cpu().numpy() > 0
        return Prediction(sequence=sequence, pdb=pdb, plddt=plddt[:, 1],
                          mean_plddt=float(plddt[exists].mean()), ptm=float(out["ptm"]))


# ------------------------------------------------------------------------------ loading
def _head_state(source) -> dict[str, torch.Tensor]:
    """The masked-LM head of ``source`` (``_HEAD_NAMES``): a transformers ``EsmForMaskedLM`` or a
    local folder of one, or anything ``load_model`` reads (an ESM-2 name, a fair-esm ``.pt``)."""
    path = None if isinstance(source, torch.nn.Module) else Path(str(source)).expanduser()
    if path is None:
        model = source
    elif path.is_dir():
        transformers = _transformers()
        try:
            with _quiet_loading():
                model = transformers.EsmForMaskedLM.from_pretrained(str(path), dtype=torch.float32)
        except (OSError, ValueError) as err:
            raise ValueError(f"--lm-head {source}: not a transformers EsmForMaskedLM folder "
                             f"({str(err).splitlines()[0][:160]})") from None
    else:
        model, _ = load_model(str(source), device="cpu")
    head = model.lm_head.state_dict()
    return {k: head[k] for k in _HEAD_NAMES}


def load_lm_head(lm, source) -> None:
    """Copy the masked-LM head of ``source`` (an ``EsmForMaskedLM``, a folder of one, an ESM-2 name
    or a fair-esm ``.pt``) into ``lm`` (an ``EsmLanguageModel``); the output projection stays tied
    to ``lm``'s token embedding. A head of other dimensions is a one-line ``ValueError``."""
    head = _head_state(source)
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
        hint = ("" if path.is_dir() else " (offline? the weights go to the Hugging Face cache, "
                "$HF_HOME/hub: fetch them once online, or pass a folder saved with save_pretrained)")
        raise RuntimeError(f"cannot load folding model {name_or_dir}: {msg}{hint}") from None


def _fair_esm_esmfold() -> FoldingModel:
    """fair-esm's ``esmfold_v1`` (needs OpenFold): its ESM-2 3B already carries the masked-LM head,
    and is fair-esm's ``ESM2``, so the engine's fast path trains it. Not run in this project (no
    OpenFold here)."""
    import esm

    from tttlab.engine.fastpath import set_fast_attention

    try:
        trunk = esm.pretrained.esmfold_v1()
    except ImportError as err:
        raise ImportError(f"fair-esm's esmfold_v1 needs OpenFold ({err}); the transformers backend "
                          "(the default) does not") from None
    lm = set_fast_attention(trunk.esm.float())  # fp16 in ESMFold: an exact cast
    lm.model_name = "esmfold_v1"
    return FoldingModel(trunk.eval(), lm, "esmfold_v1 (fair-esm)", plddt_scale=1.0)


def load_folding_model(name_or_dir: str = "esmfold_v1", lm_head=None, device=None,
                       chunk_size: int | None = None, backend: str = "transformers"
                       ) -> FoldingModel:
    """ESMFold for TTT: the model from the transformers cache (``"esmfold_v1"``, downloaded from
    ``facebook/esmfold_v1`` when missing) or a local ``save_pretrained`` folder, its language model
    with the masked-LM head of ``lm_head`` (default for ``esmfold_v1``: ``esm2_t36_3B_UR50D``;
    required for a local folder), in eval mode on ``device``.

    ``backend="fair-esm"``: fair-esm's ``esmfold_v1`` instead (needs OpenFold; it brings its own
    head, so ``lm_head`` must be None). The language model's ``model_name`` is ``"esmfold_v1"``, so
    ``preset_for`` gives the published ESMFold recipe (``preset("esmfold_v1")``)."""
    name = str(name_or_dir)
    if backend not in ("transformers", "fair-esm"):
        raise ValueError(f"backend must be 'transformers' or 'fair-esm', got {backend!r}")
    if backend == "fair-esm":
        if name != "esmfold_v1" or lm_head is not None:
            raise ValueError("the fair-esm backend loads esmfold_v1 only, with its own LM head")
        model = _fair_esm_esmfold()
    else:
        if lm_head is None:
            if name not in FOLD_MODELS:
                raise ValueError(f"{name}: give the masked-LM head of its language model (lm_head= "
                                 "/ --lm-head: a transformers EsmForMaskedLM folder or an ESM-2 .pt)")
            lm_head = FOLD_MODELS[name][1]
        model = folding_model(_load_trunk(name), lm_head, name)
    model.to(resolve_device(device))
    if chunk_size:
        model.set_chunk_size(chunk_size)
    return model


def folding_model(trunk, lm_head, name: str) -> FoldingModel:
    """A transformers ``EsmForProteinFolding`` (eval mode) ready for TTT: its language model as an
    ``EsmLanguageModel`` with the head of ``lm_head`` (see ``load_lm_head``; ``None`` keeps a
    freshly initialised head), named ``esmfold_v1`` for ``preset_for``."""
    lm = EsmLanguageModel(trunk.esm, trunk.config)
    if lm_head is not None:
        load_lm_head(lm, lm_head)
    lm.model_name = "esmfold_v1"
    return FoldingModel(trunk.eval(), lm, name)


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
    return folding_model(fold, mlm, "random ESMFold (tests and CI)").to(resolve_device(device))
