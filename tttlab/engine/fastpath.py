"""The fast ESM-2 path: fair-esm's arithmetic with fewer kernels. Batch-first layers with one q/k/v
matmul and fused attention (``layer_forward``, used by scoring, TTT and pretraining), and drop-in
forwards for fair-esm's own modules so ``model(tokens)`` is fast too (``set_fast_attention``).
Logits agree with stock fair-esm to float32 rounding (tests/test_engine_equivalence.py)."""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F


# --------------------------------------------------------------------------- fast path
# Same arithmetic as fair-esm, fewer kernels: fused attention (no T x T matrix kept for backward),
# rotary tables built once per length, one-kernel exact (erf) GELU. Logits agree with the stock
# model to float32 rounding (tests/test_engine_equivalence.py asserts 1e-4).
def _rotary_tables(rot, length: int, device):
    """``cos`` and sign-folded ``sin`` (1 x T x D) for fair-esm's ``RotaryEmbedding`` ``rot``.

    Cached on the module per length and device, built outside inference mode so one table serves
    scoring and training. ``rotate_half(x) * sin == roll(x) * signed_sin`` exactly."""
    cached = rot.__dict__.get("_fast_tables")
    if cached is not None and cached[0] == length and cached[1].device == device:
        return cached[1], cached[2]
    with torch.inference_mode(False), torch.no_grad():
        t = torch.arange(length, device=device).type_as(rot.inv_freq)
        freqs = torch.outer(t, rot.inv_freq)
        cos, sin = freqs.cos(), freqs.sin()
        cos = torch.cat((cos, cos), dim=-1)[None]
        signed = torch.cat((-sin, sin), dim=-1)[None]
    rot._fast_tables = (length, cos, signed)
    return cos, signed


def _rotate(x, cos, signed):
    """fair-esm's ``apply_rotary_pos_emb`` with ``rotate_half`` as one roll (x: ... x T x D)."""
    return x * cos + torch.roll(x, x.shape[-1] // 2, dims=-1) * signed


def _fast_attention_forward(self, query, key=None, value=None, key_padding_mask=None,
                            incremental_state=None, need_weights=True, static_kv=False,
                            attn_mask=None, before_softmax=False, need_head_weights=False):
    """Rotary self-attention through ``F.scaled_dot_product_attention``; falls back to the stock
    module whenever attention weights (contacts) or an unusual mode are asked for."""
    if (need_head_weights or before_softmax or incremental_state is not None or attn_mask is not None
            or self.rot_emb is None or self.bias_k is not None or self.add_zero_attn):
        return type(self).forward(self, query, key, value, key_padding_mask, incremental_state,
                                  need_weights, static_kv, attn_mask, before_softmax,
                                  need_head_weights)
    tgt_len, bsz, embed_dim = query.shape
    heads, head_dim = self.num_heads, self.head_dim

    def split(x):  # (T, B, C) -> (B, H, T, D)
        return x.view(tgt_len, bsz, heads, head_dim).permute(1, 2, 0, 3)

    cos, signed = _rotary_tables(self.rot_emb, tgt_len, query.device)
    q = _rotate(split(self.q_proj(query)), cos, signed)
    k = _rotate(split(self.k_proj(query)), cos, signed)
    v = split(self.v_proj(query))
    mask = None
    if key_padding_mask is not None:
        mask = ~key_padding_mask.bool()[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling,
                                         dropout_p=self.dropout if self.training else 0.0)
    out = out.permute(2, 0, 1, 3).reshape(tgt_len, bsz, embed_dim)
    return self.out_proj(out), None


def _fast_layer_forward(self, x, self_attn_mask=None, self_attn_padding_mask=None,
                        need_head_weights=False):
    """fair-esm's ``TransformerLayer.forward`` with ``F.gelu`` (exact erf form, one kernel); the
    stock forward when attention maps are asked for, so maps and contacts stay bit-identical."""
    if need_head_weights:
        return type(self).forward(self, x, self_attn_mask, self_attn_padding_mask, True)
    h = self.self_attn_layer_norm(x)
    h, attn = self.self_attn(query=h, key=h, value=h, key_padding_mask=self_attn_padding_mask,
                             need_weights=True, need_head_weights=need_head_weights,
                             attn_mask=self_attn_mask)
    x = x + h
    x = x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))
    return x, attn


def _fast_lm_head_forward(self, features):
    """fair-esm's ``RobertaLMHead.forward`` with ``F.gelu`` and the bias fused into the matmul."""
    return F.linear(self.layer_norm(F.gelu(self.dense(features))), self.weight, self.bias)


def _qkv(attn, h):
    """The q, k, v projections of ``h`` (B x T x C) as one B x T x 3 x H x D tensor: one matmul
    over the concatenated weights when the three are plain ``nn.Linear`` layers (gradients flow
    back to each through the concatenation), three calls otherwise (e.g. peft LoRA layers)."""
    bsz, length, _ = h.shape
    proj = (attn.q_proj, attn.k_proj, attn.v_proj)
    if all(type(p) is torch.nn.Linear and p.bias is not None for p in proj):
        out = F.linear(h, torch.cat([p.weight for p in proj]), torch.cat([p.bias for p in proj]))
    else:
        out = torch.stack([p(h) for p in proj], dim=2)
    return out.view(bsz, length, 3, attn.num_heads, attn.head_dim)


def layer_forward(layer, x, key_padding_mask=None, rows=None):
    """One fair-esm ``TransformerLayer`` on batch-first hidden states x (B x T x C), as
    ``layer(x.transpose(0, 1))[0].transpose(0, 1)`` computes it (same arithmetic up to float32
    rounding), with fewer kernels: q, k, v in one matmul, rotary on q and k together, fused
    attention, one-kernel exact GELU.

    ``rows`` (B x k token indices) evaluates the layer at those rows only (B x k x C): keys and
    values still come from every token, the queries, attention output and feed-forward run on k
    rows (scoring's last layer).
    """
    attn = layer.self_attn
    bsz, length, dim = x.shape
    cos, signed = _rotary_tables(attn.rot_emb, length, x.device)
    qkv = _qkv(attn, layer.self_attn_layer_norm(x))
    mask = None if key_padding_mask is None else ~key_padding_mask.bool()[:, None, None, :]
    # heads-major copies (3 x B x H x T x D): the CPU flash kernel runs about 20 % faster on
    # contiguous heads than on strided views of the B x T x H x D projections
    qkv = qkv.permute(2, 0, 3, 1, 4).contiguous()
    cos, signed = cos[:, None], signed[:, None]  # 1 x 1 x T x D
    if rows is None:
        q, k = _rotate(qkv[:2], cos, signed).unbind(0)
        residual = x
    else:  # queries at the given rows only; keys and values from every token
        index = rows[:, None, :, None].expand(-1, attn.num_heads, -1, attn.head_dim)
        q = _rotate(qkv[0].gather(2, index), cos[0, 0, rows][:, None], signed[0, 0, rows][:, None])
        k = _rotate(qkv[1], cos, signed)
        residual = x.gather(1, rows[..., None].expand(-1, -1, dim))
    out = F.scaled_dot_product_attention(q, k, qkv[2], attn_mask=mask, scale=attn.scaling,
                                         dropout_p=attn.dropout if attn.training else 0.0)
    x = residual + attn.out_proj(out.transpose(1, 2).reshape(bsz, -1, dim))
    return x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x))))


def _fast_modules(model):
    """(module, fast forward) for every module the fast path replaces."""
    from esm.modules import RobertaLMHead, TransformerLayer
    from esm.multihead_attention import MultiheadAttention

    fast = {MultiheadAttention: _fast_attention_forward, TransformerLayer: _fast_layer_forward,
            RobertaLMHead: _fast_lm_head_forward}
    for module in model.modules():
        if type(module) in fast:
            yield module, fast[type(module)]


def set_fast_attention(model, enabled: bool = True):
    """Switch ``model`` to (or back from) the fast path: fused attention, cached rotary tables,
    one-kernel GELU. Attention maps and contacts are still computed by the stock module."""
    for module, forward in _fast_modules(model):
        if enabled:
            module.forward = types.MethodType(forward, module)
        elif "forward" in module.__dict__:
            del module.forward
    return model


def uses_fast_attention(model) -> bool:
    """True when ``model``'s attention modules run the fused path."""
    from esm.multihead_attention import MultiheadAttention

    return any("forward" in m.__dict__ for m in model.modules() if isinstance(m, MultiheadAttention))


def set_torch_compile(model, enabled: bool = True, **options):
    """Compile every transformer layer of ``model`` in place with ``torch.compile`` (``options``
    are passed on, e.g. ``mode="max-autotune"``); ``enabled=False`` undoes it.

    Off by default: every new sequence length and batch shape triggers a compile (on the shared
    2-core CPU of the benchmarks, several minutes even for a 2-layer model), so it can only pay
    off for long TTT runs on a GPU; on CPU it also needs a C++ compiler. Results match eager
    execution to float32 rounding.
    """
    from esm.modules import TransformerLayer

    for module in model.modules():
        if isinstance(module, TransformerLayer):
            if enabled:
                module.compile(**options)
            else:
                module._compiled_call_impl = None
    return model
