"""BaseTransformer: embeddings -> N layers -> final layernorm -> final hook, every step a named hook.

Hook dispatch (a hook missing from ``transformer.hooks`` falls back to the ``*_default`` below)::

    input_ids ──word_embedding_forward──┐
    position_ids ─position_embedding_forward─(+)─ dropout ─┐
                                                          ▼
    ┌─ layer i: layer_forward(hidden, mask, layer_id=i, ...) ───────────────────────┐
    │   input_layernorm ─ attention_forward ─┬─ query_key_value, split heads        │
    │                                        ├─ attention_fn(q, k, v, mask, dropout)│
    │                                        └─ dense, dropout                      │
    │   (+ residual) ─ post_attention_layernorm ─ mlp_forward ─ dropout (+ residual)│
    └───────────────────────────────────────────────────────────────────────────────┘
                                                          ▼
                        final_layernorm ─ final_forward (default: tied word embeddings)

Default hooks take ``self`` = any object with a ``.transformer`` attribute (a sub-module, or the
model when a ``non_conflict`` mixin calls them as ``old_impl``) and find their weights through
``self.transformer.layers[kw['layer_id']]``, as SAT's do.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from .initialization import DEFAULT_INITIALIZER_RANGE, init_module_, output_projection_std
from .rotary import RotaryEmbedding

HOOK_NAMES = ("word_embedding_forward", "position_embedding_forward", "attention_fn",
              "attention_forward", "cross_attention_forward", "mlp_forward", "routing_forward",
              "layer_forward", "final_forward")
LAYERNORM_ORDERS = ("pre", "post", "sandwich")


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """SAT's default activation: the tanh approximation of GELU."""
    return F.gelu(x, approximate="tanh")


# ---------------------------------------------------------------- default hook implementations
def word_embedding_forward_default(self, input_ids: torch.Tensor, output_cross_layer=None, **kw):
    """``[b, s]`` token ids -> ``[b, s, h]``."""
    return self.transformer.word_embeddings(input_ids)


def position_embedding_forward_default(self, position_ids: torch.Tensor, output_cross_layer=None, **kw):
    """``[b, s]`` positions -> ``[b, s, h]``; None (no positions added) for rotary models without a table."""
    table = self.transformer.position_embeddings
    return None if table is None else table(position_ids)


def _mask_to_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # Additive bias instead of a boolean mask: a query row with every key masked then gets a
    # uniform (finite) softmax, as in SAT and HF, instead of NaN. Half of finfo.min keeps
    # `bias + score` finite even in fp16.
    keep = mask if mask.dtype == torch.bool else mask > 0
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(
        ~keep, torch.finfo(dtype).min / 2)


# (mask, (dtype, version), bias) of the last call: every layer of one forward gets the same mask object.
# One tuple, replaced whole, so concurrent callers never pair one mask with another's bias.
_last_bias: tuple = (None, None, None)


def _bias_for(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``_mask_to_bias``, computed once per mask object (and in-place version) instead of once per layer."""
    global _last_bias
    if torch.compiler.is_compiling():  # a global cache is a side effect dynamo cannot trace (a graph break per
        return _mask_to_bias(mask, dtype)  # layer under activation checkpointing); the compiler dedups it itself
    key = (dtype, mask._version)
    cached_mask, cached_key, bias = _last_bias
    if cached_mask is not mask or cached_key != key or mask.requires_grad:
        bias = _mask_to_bias(mask, dtype)
        _last_bias = (mask, key, bias)
    return bias


_SDPA_HAS_GQA = torch.torch_version.TorchVersion(torch.__version__) >= (2, 5)


def attention_fn_default(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attention_mask: Optional[torch.Tensor], attention_dropout=None, **kw):
    """Scaled dot-product attention over ``[b, nh, s, d]`` tensors -> context ``[b, nh, s, d]``.

    ``attention_mask`` follows SAT: 1 (or True) = attend, broadcastable to ``[b, nh, sq, sk]``;
    None or a one-element mask (SAT's ``ones(1, 1)``) = full attention. ``attention_dropout`` is given
    only in training mode. Grouped-query attention: ``key``/``value`` may have fewer heads than ``query``
    (each serves nh / nkv heads).
    """
    gqa = key.shape[1] != query.shape[1]
    if gqa and not _SDPA_HAS_GQA:
        groups = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    dropout_p = float(getattr(attention_dropout, "p", 0.0)) if attention_dropout is not None else 0.0
    full = attention_mask is None or attention_mask.numel() == 1
    bias = None if full else _bias_for(attention_mask, query.dtype)
    extra = {"enable_gqa": True} if gqa and _SDPA_HAS_GQA else {}  # shares KV heads without copying them
    return F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=dropout_p, **extra)


def split_qkv(attn: "SelfAttention", hidden_states: torch.Tensor):
    """``[b, s, h]`` -> q ``[b, nh, s, d]``, k and v ``[b, nkv, s, d]`` (nkv = nh without GQA)."""
    b, s, _ = hidden_states.shape
    qkv = attn.query_key_value(hidden_states)         # [b, s, (nh + 2 * nkv) * d]
    # SAT layout: the projection output is [q (nh * d) | k (nkv * d) | v (nkv * d)].
    q, k, v = qkv.split([attn.num_heads * attn.head_dim, attn.num_kv_heads * attn.head_dim,
                         attn.num_kv_heads * attn.head_dim], dim=-1)
    return (q.view(b, s, -1, attn.head_dim).transpose(1, 2), k.view(b, s, -1, attn.head_dim).transpose(1, 2),
            v.view(b, s, -1, attn.head_dim).transpose(1, 2))


def attend_and_project(self, attn: "SelfAttention", q, k, v, mask, **kw) -> torch.Tensor:
    """``attention_fn`` hook over the heads, then merge heads, ``dense`` and output dropout."""
    b, _, s, _ = q.shape
    dropout_fn = attn.attention_dropout if attn.training else None
    attention_fn = self.transformer.hooks.get("attention_fn", attention_fn_default)
    context = attention_fn(q, k, v, mask, dropout_fn, **kw)          # [b, nh, s, d]
    context = context.transpose(1, 2).reshape(b, s, attn.num_heads * attn.head_dim)
    output = attn.dense(context)
    return attn.output_dropout(output) if attn.training else output


standard_attention = attention_fn_default  # SAT's name, imported by SAT mixins as old_impl's default


def cross_attention_forward_default(self, hidden_states: torch.Tensor, cross_attention_mask, encoder_outputs,
                                    **kw):
    """SAT's cross-attention hook. This trunk has no cross-attention layers, so only a mixin that owns
    its own cross-attention weights can implement it; the default says so."""
    raise ConfigError("cross_attention_forward was called but this model has no cross-attention layers; "
                      "a mixin that calls it must also define it (encoder-decoder models are not built in).")


def routing_forward_default(self, hidden_states: torch.Tensor, **kw):
    """SAT's mixture-of-experts router hook; the trunk has one MLP per layer, so the default says so."""
    raise ConfigError("routing_forward was called but this model has no experts (num_experts 1); a mixin "
                      "that calls it must also define it.")


def attention_forward_default(self, hidden_states: torch.Tensor, mask, **kw):
    """Self-attention block: qkv projection, heads, ``attention_fn``, output projection, dropout."""
    attn = self.transformer.layers[kw["layer_id"]].attention
    q, k, v = split_qkv(attn, hidden_states)
    if self.transformer.rotary is not None:  # --is-rotary-emb: SAT's default attention rotates q and k
        q, k = self.transformer.rotary(q, k, kw["position_ids"])
    return attend_and_project(self, attn, q, k, v, mask, **kw)


def mlp_forward_default(self, hidden_states: torch.Tensor, **kw):
    """h -> inner -> activation -> h (dropout is applied by the MLP module after the hook).

    Gated (``is_gated_mlp``): ``dense_4h_to_h(act(dense_h_to_4h_gate(x)) * dense_h_to_4h(x))``."""
    mlp = self.transformer.layers[kw["layer_id"]].mlp
    inner = mlp.activation_func(mlp.dense_h_to_4h(hidden_states))
    if mlp.dense_h_to_4h_gate is not None:
        inner = mlp.activation_func(mlp.dense_h_to_4h_gate(hidden_states)) * mlp.dense_h_to_4h(hidden_states)
    return mlp.dense_4h_to_h(inner)


def layer_forward_default(self, hidden_states: torch.Tensor, mask, **kw):
    """One block in SAT's layernorm orders (see ``run_layer``)."""
    return run_layer(self.transformer.layers[kw["layer_id"]], hidden_states, mask, **kw)


def run_layer(layer: "TransformerLayer", hidden_states: torch.Tensor, mask, *,
              adapt_attention: Optional[Callable] = None, adapt_mlp: Optional[Callable] = None, **kw):
    """The default block, with optional functions applied to the attention and MLP outputs before their
    residual additions (how adapters plug in).

    'post' normalises at the START of the layer and uses the normalised input as the residual;
    the classic post-LN block's last layernorm is the next layer's ``input_layernorm`` (or
    ``final_layernorm``). 'sandwich' adds layernorms after attention and after the MLP.
    """
    x = layer.input_layernorm(hidden_states)
    attention_output = layer.attention(x, mask, **kw)
    if layer.layernorm_order == "sandwich":
        attention_output = layer.third_layernorm(attention_output)
    if adapt_attention is not None:
        attention_output = adapt_attention(attention_output)
    residual = x if layer.layernorm_order == "post" else hidden_states
    hidden_states = residual + attention_output
    mlp_input = layer.post_attention_layernorm(hidden_states)
    mlp_output = layer.mlp(mlp_input, **kw)
    if layer.layernorm_order == "sandwich":
        mlp_output = layer.fourth_layernorm(mlp_output)
    if adapt_mlp is not None:
        mlp_output = adapt_mlp(mlp_output)
    residual = mlp_input if layer.layernorm_order == "post" else hidden_states
    return residual + mlp_output


def final_forward_default(self, logits: torch.Tensor, **kw):
    """Tied output: ``[b, s, h] @ word_embeddings.T -> [b, s, vocab]``."""
    return F.linear(logits, self.transformer.word_embeddings.weight)


HOOKS_DEFAULT: dict[str, Callable] = {
    "word_embedding_forward": word_embedding_forward_default,
    "position_embedding_forward": position_embedding_forward_default,
    "attention_fn": attention_fn_default,
    "attention_forward": attention_forward_default,
    "cross_attention_forward": cross_attention_forward_default,
    "mlp_forward": mlp_forward_default,
    "routing_forward": routing_forward_default,
    "layer_forward": layer_forward_default,
    "final_forward": final_forward_default,
}


def _hooked(module: torch.nn.Module, name: str, *args, **kw):
    """Call the hook ``name`` if one is installed, else its default bound to ``module``."""
    hook = module.transformer.hooks.get(name)
    return hook(*args, **kw) if hook is not None else HOOKS_DEFAULT[name](module, *args, **kw)


def _point_to(module: torch.nn.Module, transformer: torch.nn.Module) -> None:
    # Plain attribute (not a registered sub-module): no cycle in modules() or state_dict().
    object.__setattr__(module, "transformer", transformer)


# ---------------------------------------------------------------- modules
class SelfAttention(torch.nn.Module):
    """Parameters of one attention block: ``query_key_value`` ([(nh + 2 nkv) d, h]) and ``dense``."""

    def __init__(self, hidden_size: int, num_heads: int, head_dim: int, attention_dropout: float,
                 hidden_dropout: float, use_bias: bool, dtype: torch.dtype, num_kv_heads: int = 0,
                 use_qkv_bias: bool = False):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.num_kv_heads = num_kv_heads or num_heads
        inner = num_heads * head_dim
        self.query_key_value = torch.nn.Linear(hidden_size, inner + 2 * self.num_kv_heads * head_dim,
                                               bias=use_bias or use_qkv_bias, dtype=dtype)
        self.dense = torch.nn.Linear(inner, hidden_size, bias=use_bias, dtype=dtype)
        self.attention_dropout = torch.nn.Dropout(attention_dropout)
        self.output_dropout = torch.nn.Dropout(hidden_dropout)

    def forward(self, hidden_states: torch.Tensor, mask, **kw) -> torch.Tensor:
        return _hooked(self, "attention_forward", hidden_states, mask, **kw)


class MLP(torch.nn.Module):
    """Parameters of one MLP block: ``dense_h_to_4h`` and ``dense_4h_to_h``."""

    def __init__(self, hidden_size: int, inner_hidden_size: int, hidden_dropout: float,
                 use_bias: bool, activation_func: Callable, dtype: torch.dtype, gated: bool = False):
        super().__init__()
        self.activation_func = activation_func
        self.dense_h_to_4h = torch.nn.Linear(hidden_size, inner_hidden_size, bias=use_bias, dtype=dtype)
        self.dense_h_to_4h_gate = (torch.nn.Linear(hidden_size, inner_hidden_size, bias=use_bias, dtype=dtype)
                                   if gated else None)
        self.dense_4h_to_h = torch.nn.Linear(inner_hidden_size, hidden_size, bias=use_bias, dtype=dtype)
        self.dropout = torch.nn.Dropout(hidden_dropout)

    def forward(self, hidden_states: torch.Tensor, **kw) -> torch.Tensor:
        output = _hooked(self, "mlp_forward", hidden_states, **kw)
        return self.dropout(output) if self.training else output


class TransformerLayer(torch.nn.Module):
    """Layernorms + attention + MLP of one layer; the computation is the ``layer_forward`` hook."""

    def __init__(self, cfg: dict, activation_func: Callable, dtype: torch.dtype,
                 layernorm: Callable = torch.nn.LayerNorm):
        super().__init__()
        h, eps = cfg["hidden_size"], cfg["layernorm_epsilon"]
        self.layernorm_order = cfg["layernorm_order"]
        self.input_layernorm = layernorm(h, eps=eps, dtype=dtype)
        self.attention = SelfAttention(h, cfg["num_attention_heads"], cfg["head_dim"],
                                       cfg["attention_dropout"], cfg["hidden_dropout"],
                                       cfg["use_bias"], dtype, cfg["num_multi_query_heads"], cfg["use_qkv_bias"])
        self.post_attention_layernorm = layernorm(h, eps=eps, dtype=dtype)
        if self.layernorm_order == "sandwich":
            self.third_layernorm = layernorm(h, eps=eps, dtype=dtype)
            self.fourth_layernorm = layernorm(h, eps=eps, dtype=dtype)
        self.mlp = MLP(h, cfg["inner_size"], cfg["hidden_dropout"], cfg["use_bias"],
                       activation_func, dtype, gated=cfg["is_gated_mlp"])

    def forward(self, hidden_states: torch.Tensor, mask, **kw) -> torch.Tensor:
        return _hooked(self, "layer_forward", hidden_states, mask, **kw)


# Architecture options that ``model_config.json`` records, with their defaults (docs/models.md, as SAT).
ARCH_DEFAULTS: dict = {
    "layernorm_order": "pre", "inner_hidden_size": None, "hidden_size_per_attention_head": None,
    "layernorm_epsilon": 1e-5, "hidden_dropout": 0.1, "attention_dropout": 0.1,
    "use_bias": True, "use_final_layernorm": True,
    # LLaMA-style options (SAT's names): grouped-query KV heads (0 = as many as query heads), bias on
    # qkv only, act(gate) * up MLP, rotary positions (no learned position table).
    "num_multi_query_heads": 0, "use_qkv_bias": False, "is_gated_mlp": False, "is_rotary_emb": False,
}
REQUIRED_ARCH = ("num_layers", "vocab_size", "hidden_size", "num_attention_heads", "max_sequence_length")


def _check_arch(cfg: dict) -> None:
    """Raise ConfigError for an architecture that cannot be built."""
    for name in REQUIRED_ARCH:
        if not isinstance(cfg[name], int) or cfg[name] <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {cfg[name]!r}.")
    if cfg["layernorm_order"] not in LAYERNORM_ORDERS:
        raise ConfigError(f"--layernorm-order must be one of {', '.join(LAYERNORM_ORDERS)}, "
                          f"got {cfg['layernorm_order']!r}.")
    for name in ("hidden_dropout", "attention_dropout"):
        if not 0.0 <= cfg[name] < 1.0:
            raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1), got {cfg[name]!r}.")
    h, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    if cfg["hidden_size_per_attention_head"] is None and h % nh:
        raise ConfigError(f"--hidden-size {h} is not divisible by --num-attention-heads {nh}; change one "
                          "of them or set --hidden-size-per-attention-head.")
    nkv = cfg["num_multi_query_heads"]
    if not isinstance(nkv, int) or nkv < 0 or (nkv and nh % nkv):
        raise ConfigError(f"num_multi_query_heads={nkv!r} must be 0 (no grouping) or a positive divisor of "
                          f"--num-attention-heads {nh}.")


class BaseTransformer(torch.nn.Module):
    """The transformer trunk; ``forward`` returns ``(logits, *per_layer_outputs)``.

    Parameter names are SAT's (``word_embeddings``, ``position_embeddings``,
    ``layers.<i>.attention.query_key_value``, ``layers.<i>.input_layernorm``, ``final_layernorm``, ...).
    Built on the ambient default device (``with torch.device("meta"):`` works); ``skip_init``
    leaves the weights uninitialised because they will be loaded.
    """

    def __init__(self, num_layers: int, vocab_size: int, hidden_size: int, num_attention_heads: int,
                 max_sequence_length: int, *, checkpoint_activations: bool = False,
                 checkpoint_num_layers: int = 1, checkpoint_skip_layers: int = 0,
                 activation_func: Callable = gelu_tanh, hooks: Optional[dict] = None,
                 params_dtype: torch.dtype = torch.float32, skip_init: bool = False,
                 layernorm: Callable = torch.nn.LayerNorm, **arch):
        super().__init__()
        unknown = set(arch) - set(ARCH_DEFAULTS)
        if unknown:
            raise ConfigError(f"unknown transformer option(s) {sorted(unknown)}; known: {sorted(ARCH_DEFAULTS)}.")
        cfg = {**ARCH_DEFAULTS, **arch, "num_layers": num_layers, "vocab_size": vocab_size,
               "hidden_size": hidden_size, "num_attention_heads": num_attention_heads,
               "max_sequence_length": max_sequence_length}
        _check_arch(cfg)
        self.arch = dict(cfg)  # JSON-friendly record for model_config.json
        cfg["head_dim"] = cfg["hidden_size_per_attention_head"] or hidden_size // num_attention_heads
        cfg["inner_size"] = cfg["inner_hidden_size"] or 4 * hidden_size
        self.num_layers, self.hidden_size = num_layers, hidden_size
        self.num_attention_heads = num_attention_heads
        self.checkpoint_activations = checkpoint_activations
        self.checkpoint_num_layers = max(1, int(checkpoint_num_layers))
        self.checkpoint_skip_layers = int(checkpoint_skip_layers)
        self.hooks = hooks if hooks is not None else {}
        _point_to(self, self)
        target = torch.get_default_device()
        if skip_init:  # build on meta (no init work, no memory), then allocate uninitialised storage
            with torch.device("meta"):
                self._build(cfg, activation_func, params_dtype, layernorm)
            self.to_empty(device=target)
        else:
            self._build(cfg, activation_func, params_dtype, layernorm)
            self.reset_parameters()

    def _build(self, cfg: dict, activation_func: Callable, dtype: torch.dtype, layernorm: Callable) -> None:
        h = cfg["hidden_size"]
        self.word_embeddings = torch.nn.Embedding(cfg["vocab_size"], h, dtype=dtype)
        self.position_embeddings = (None if cfg["is_rotary_emb"]
                                    else torch.nn.Embedding(cfg["max_sequence_length"], h, dtype=dtype))
        # plain attribute (no parameters): rotary positions of the default attention with --is-rotary-emb
        self.rotary = RotaryEmbedding(cfg["head_dim"]) if cfg["is_rotary_emb"] else None
        self.embedding_dropout = torch.nn.Dropout(cfg["hidden_dropout"])
        self.layers = torch.nn.ModuleList(
            TransformerLayer(cfg, activation_func, dtype, layernorm) for _ in range(cfg["num_layers"]))
        self.final_layernorm = (layernorm(h, eps=cfg["layernorm_epsilon"], dtype=dtype)
                                if cfg["use_final_layernorm"] else None)
        for module in self.modules():
            _point_to(module, self)

    @torch.no_grad()
    def reset_parameters(self, std: float = DEFAULT_INITIALIZER_RANGE, scale_output: bool = True) -> None:
        """SAT's init: N(0, std) weights, zero biases, unit layernorms, and (``scale_output``) the output
        projections ``attention.dense`` / ``mlp.dense_4h_to_h`` at N(0, std / sqrt(2 * num_layers))."""
        for name, module in self.named_modules():
            init_module_(module, output_projection_std(name, std, self.num_layers) if scale_output else std)

    def _check_mask(self, attention_mask, batch: int, seq: int, device, mem: int = 0) -> torch.Tensor:
        """SAT mask -> what hooks receive: ``ones(1, 1)`` for None (full attention), a causal ``[1, 1, s, k]``
        for a negative int, else the tensor as given (``[s, k]`` or 4-D) in the parameter dtype (bool kept).

        ``k = mem + s``: with ``mem`` cached positions (``mems``) the keys span the cache and the new tokens."""
        if attention_mask is None:
            return torch.ones(1, 1, device=device, dtype=self._dtype())
        keys = mem + seq
        if isinstance(attention_mask, int) and not isinstance(attention_mask, bool) and attention_mask < 0:
            return torch.ones(seq, keys, device=device).tril_(mem).view(1, 1, seq, keys).to(self._dtype())
        shape = tuple(getattr(attention_mask, "shape", ()))
        ok = (shape in ((1, 1), (seq, keys)) or
              (len(shape) == 4 and shape[0] in (1, batch) and shape[1] in (1, self.num_attention_heads)
               and shape[2] in (1, seq) and shape[3] == keys))
        if not ok:
            raise ConfigError(
                f"attention_mask has shape {shape or type(attention_mask).__name__} but must be "
                f"[b, 1, 1, s] (padding), [b, 1, s, s] or [s, s] (full) with b={batch}, s={seq} (the last "
                f"dimension {keys} when mems cache {mem} positions) and 1 = attend (None = attend everywhere); "
                "for a [b, s] padding mask pass attention_mask[:, None, None, :].")
        if attention_mask.dtype == torch.bool:
            return attention_mask
        return attention_mask.to(self._dtype())

    def _dtype(self) -> torch.dtype:
        return self.word_embeddings.weight.dtype

    def _run_layers(self, hidden_states, mask, start: int, end: int, cross: dict, layer_kw: dict,
                    output_hidden_states: bool):
        """Layers [start, end): returns (hidden, one output dict per layer, cross-layer dict)."""
        outputs = []
        for layer_id in range(start, end):
            this_layer, next_cross = {}, {}
            result = self.layers[layer_id](hidden_states, mask, layer_id=layer_id, **layer_kw, **cross,
                                           output_this_layer=this_layer, output_cross_layer=next_cross)
            hidden_states = result[0] if isinstance(result, tuple) else result
            if output_hidden_states:
                this_layer["hidden_states"] = hidden_states
            outputs.append(this_layer)
            cross = next_cross
        return hidden_states, outputs, cross

    def _checkpointing(self) -> bool:
        return self.checkpoint_activations and self.training and torch.is_grad_enabled()

    def forward(self, input_ids: torch.Tensor, position_ids: Optional[torch.Tensor] = None,
                attention_mask=None, *, output_hidden_states: bool = False,
                skip_final_forward: bool = False, **kw_args):
        """Run the model: ``[b, s]`` ids -> ``(logits, *per_layer_outputs)``.

        ``logits`` is what ``final_forward`` returns (default ``[b, s, vocab]``; the final hidden
        states ``[b, s, h]`` with ``skip_final_forward=True``). ``per_layer_outputs`` holds one dict
        per layer, filled by hooks via ``output_this_layer`` (``"hidden_states"`` with
        ``output_hidden_states=True``). Extra keyword arguments (e.g. ``token_type_ids``) reach
        every hook. ``position_ids`` default to ``arange(s)``; ``attention_mask``: see ``_check_mask``.
        """
        batch, seq = input_ids.shape[:2]
        mems = kw_args.get("mems")
        mem = 0 if mems is None else mems.shape[2]  # [layers, b, cached, 2 * nkv * d] (CachedAutoregressiveMixin)
        if position_ids is None:
            position_ids = torch.arange(mem, mem + seq, device=input_ids.device).unsqueeze(0).expand(batch, seq)
        mask = self._check_mask(attention_mask, batch, seq, input_ids.device, mem)
        cross: dict = {}
        hidden_states = _hooked(self, "word_embedding_forward", input_ids, output_cross_layer=cross, **kw_args)
        position = _hooked(self, "position_embedding_forward", position_ids, output_cross_layer=cross, **kw_args)
        if position is not None:
            hidden_states = hidden_states + position
        hidden_states = self.embedding_dropout(hidden_states)
        layer_kw = dict(kw_args, position_ids=position_ids)
        per_layer: list = []
        checkpointing = self._checkpointing()
        chunk = self.checkpoint_num_layers if checkpointing else self.num_layers
        for start in range(0, self.num_layers, chunk):
            args = (hidden_states, mask, start, min(start + chunk, self.num_layers), cross, layer_kw,
                    output_hidden_states)
            if checkpointing and start + self.checkpoint_skip_layers < self.num_layers:
                hidden_states, outputs, cross = checkpoint(self._run_layers, *args, use_reentrant=False)
            else:
                hidden_states, outputs, cross = self._run_layers(*args)
            per_layer.extend(outputs)
        if self.final_layernorm is not None:
            hidden_states = self.final_layernorm(hidden_states)
        if skip_final_forward:
            return (hidden_states, *per_layer)
        return (_hooked(self, "final_forward", hidden_states, **kw_args), *per_layer)
