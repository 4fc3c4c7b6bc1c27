"""BaseModel: construction from args, forward protocol, masks, layernorm orders, checkpointing."""
import argparse
import math

import pytest
import torch

from sat_accel.errors import ConfigError
from sat_accel.model import BaseModel
from sat_accel.model.transformer import ARCH_DEFAULTS

TINY = dict(num_layers=2, hidden_size=24, num_attention_heads=3, vocab_size=40, max_sequence_length=16,
            hidden_dropout=0.0, attention_dropout=0.0)


def tiny(**overrides) -> BaseModel:
    torch.manual_seed(0)
    return BaseModel(BaseModel.get_args(**{**TINY, **overrides})).eval()


def ids(b=2, s=7, vocab=40):
    return torch.randint(0, vocab, (b, s), generator=torch.Generator().manual_seed(1))


def reference_forward(model: BaseModel, input_ids, keep):
    """Textbook pre-LN transformer written independently of the hooks (keep: [b, s] 1 = attend)."""
    t = model.transformer
    pos = torch.arange(input_ids.shape[1])
    h = t.word_embeddings(input_ids) + t.position_embeddings(pos)[None]
    b, s, _ = h.shape
    nh = t.num_attention_heads
    for layer in t.layers:
        x = layer.input_layernorm(h)
        q, k, v = layer.attention.query_key_value(x).split(t.hidden_size, dim=-1)
        q, k, v = (z.view(b, s, nh, -1).transpose(1, 2) for z in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(keep[:, None, None, :] == 0, float("-inf"))
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, -1)
        h = h + layer.attention.dense(ctx)
        m = layer.post_attention_layernorm(h)
        h = h + layer.mlp.dense_4h_to_h(torch.nn.functional.gelu(layer.mlp.dense_h_to_4h(m), approximate="tanh"))
    return t.final_layernorm(h) @ t.word_embeddings.weight.T


def test_get_args_has_spec_defaults_and_overrides():
    args = BaseModel.get_args(num_layers=3, my_extra_flag=5)
    assert (args.num_layers, args.hidden_size, args.num_attention_heads, args.vocab_size) == (3, 1024, 16, 100)
    assert (args.max_sequence_length, args.layernorm_order, args.layernorm_epsilon) == (512, "pre", 1e-5)
    assert (args.hidden_dropout, args.attention_dropout, args.inner_hidden_size, args.skip_init) == (0.1, 0.1, None, False)
    assert args.my_extra_flag == 5


def test_forward_returns_logits_then_one_dict_per_layer_and_matches_reference():
    model = tiny()
    x = ids()
    keep = torch.ones(2, 7)
    keep[1, 4:] = 0
    logits, *outputs = model(input_ids=x, position_ids=None, attention_mask=keep[:, None, None, :])
    assert logits.shape == (2, 7, 40) and len(outputs) == 2 and all(o == {} for o in outputs)
    torch.testing.assert_close(logits, reference_forward(model, x, keep), atol=1e-5, rtol=1e-5)


def test_default_output_is_tied_to_word_embeddings():
    model = tiny()
    names = [n for n, _ in model.named_parameters()]
    assert "transformer.word_embeddings.weight" in names and not any("lm_head" in n for n in names)
    h = model.encode(ids())
    torch.testing.assert_close(model(ids())[0], h @ model.transformer.word_embeddings.weight.T)


def test_mask_none_equals_all_ones_and_bool_equals_float():
    model = tiny()
    x = ids()
    full = model(x)[0]
    torch.testing.assert_close(model(x, None, torch.ones(2, 1, 1, 7))[0], full)
    keep = torch.rand(2, 1, 7, 7, generator=torch.Generator().manual_seed(3)) > 0.3
    torch.testing.assert_close(model(x, None, keep)[0], model(x, None, keep.float())[0])


def test_negative_int_mask_is_causal():
    model = tiny()
    x = ids(1, 6)
    logits = model(x, None, -1)[0]
    prefix = model(x[:, :4], None, -1)[0]
    torch.testing.assert_close(logits[:, :4], prefix, atol=1e-5, rtol=1e-5)


def test_fully_masked_rows_stay_finite():
    model = tiny()
    keep = torch.ones(1, 1, 5, 5)
    keep[0, 0, 3:] = 0  # queries 3 and 4 attend to nothing (outer-product padding masks do this)
    assert torch.isfinite(model(ids(1, 5), None, keep)[0]).all()


@pytest.mark.parametrize("shape", [(2, 7), (2, 1, 7), (2, 1, 1, 6), (3, 1, 1, 7), (2, 2, 7, 7)])
def test_wrong_mask_shape_names_expected_shapes(shape):
    with pytest.raises(ConfigError, match=r"\[b, 1, 1, s\].*\[b, 1, s, s\]"):
        tiny()(ids(), None, torch.ones(shape))


def test_position_ids_default_to_arange():
    model = tiny()
    x = ids()
    torch.testing.assert_close(model(x)[0], model(x, torch.arange(7).expand(2, 7))[0])
    assert not torch.allclose(model(x)[0], model(x, torch.arange(7).flip(0).expand(2, 7))[0])


@pytest.mark.parametrize("order", ["pre", "post", "sandwich"])
def test_layernorm_orders_build_distinct_models(order):
    model = tiny(layernorm_order=order)
    has_sandwich = hasattr(model.transformer.layers[0], "third_layernorm")
    assert has_sandwich == (order == "sandwich")
    assert model(ids())[0].shape == (2, 7, 40)


def test_post_ln_layer_uses_normalised_input_as_residual():
    model = tiny(layernorm_order="post", num_layers=1)
    t, layer, x = model.transformer, model.transformer.layers[0], ids()
    h = t.word_embeddings(x) + t.position_embeddings(torch.arange(7))[None]
    a = layer.input_layernorm(h)
    m = layer.post_attention_layernorm(a + layer.attention(a, None, layer_id=0))
    expected = t.final_layernorm(m + layer.mlp(m, layer_id=0))
    torch.testing.assert_close(model.encode(x), expected)


def test_hidden_not_divisible_by_heads_is_config_error():
    with pytest.raises(ConfigError, match="--hidden-size 25 is not divisible by --num-attention-heads 3"):
        tiny(hidden_size=25)
    model = tiny(hidden_size=25, hidden_size_per_attention_head=8)  # explicit head size is allowed
    assert model.transformer.layers[0].attention.query_key_value.weight.shape == (72, 25)


def test_bad_layernorm_order_and_missing_args():
    with pytest.raises(ConfigError, match="--layernorm-order"):
        tiny(layernorm_order="middle")
    with pytest.raises(ConfigError, match=r"--hidden-dropout must be in \[0, 1\), got 1.5"):
        tiny(hidden_dropout=1.5)
    with pytest.raises(ConfigError, match="args lack num_layers"):
        BaseModel(argparse.Namespace(hidden_size=8, num_attention_heads=2, vocab_size=5, max_sequence_length=4))


def test_kwargs_override_args():
    model = BaseModel(BaseModel.get_args(**TINY), layernorm_epsilon=1e-12, inner_hidden_size=10)
    assert model.transformer.layers[0].input_layernorm.eps == 1e-12
    assert model.transformer.layers[0].mlp.dense_h_to_4h.out_features == 10
    assert model.get_model_config()["layernorm_epsilon"] == 1e-12


def test_model_config_round_trip_rebuilds_same_architecture():
    model = tiny(layernorm_order="sandwich", inner_hidden_size=30)
    config = model.get_model_config()
    assert config["model_class"] == "BaseModel"
    assert set(ARCH_DEFAULTS) | {"num_layers", "hidden_size", "vocab_size"} <= set(config)
    rebuilt = BaseModel.from_model_config(config)
    assert rebuilt.get_model_config() == config
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes


def test_merge_model_config_config_wins_and_args_not_mutated():
    args = BaseModel.get_args(num_layers=9, lr=0.5)
    merged = BaseModel.merge_model_config({"num_layers": 2, "model_class": "BaseModel"}, args)
    assert (merged.num_layers, merged.lr, merged.model_class) == (2, 0.5, "BaseModel")
    assert args.num_layers == 9


def test_builds_on_meta_without_memory_and_loads_with_assign():
    source = tiny()
    with torch.device("meta"):
        model = BaseModel(BaseModel.get_args(**TINY, skip_init=True))
    assert all(p.is_meta for p in model.parameters())
    model.load_state_dict(source.state_dict(), assign=True)
    model.eval()
    torch.testing.assert_close(model(ids())[0], source(ids())[0])


def test_skip_init_skips_random_init():
    torch.manual_seed(0)
    model = BaseModel(BaseModel.get_args(**TINY, skip_init=True))
    after_build = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(after_build, torch.rand(1))  # no random numbers were drawn
    assert not any(p.is_meta for p in model.parameters())
    torch.manual_seed(0)
    BaseModel(BaseModel.get_args(**TINY))
    assert not torch.equal(torch.rand(1), after_build)  # a normal build does draw them


def test_init_scales_output_projections():
    model = tiny(hidden_size=96, num_attention_heads=4, num_layers=8)
    layer = model.transformer.layers[0]
    assert layer.attention.query_key_value.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert layer.attention.dense.weight.std().item() == pytest.approx(0.02 / 4, rel=0.1)
    assert torch.count_nonzero(layer.attention.dense.bias) == 0


def test_params_dtype():
    model = BaseModel(BaseModel.get_args(**TINY), params_dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model(ids(), None, torch.ones(2, 1, 1, 7))[0].dtype == torch.bfloat16


def test_dropout_only_in_training():
    model = tiny(hidden_dropout=0.3, attention_dropout=0.3)
    x = ids()
    torch.testing.assert_close(model(x)[0], model(x)[0])
    model.train()
    assert not torch.allclose(model(x)[0], model(x)[0])


def test_output_hidden_states_per_layer():
    model = tiny()
    _, *outputs = model(ids(), output_hidden_states=True)
    assert [o["hidden_states"].shape for o in outputs] == [(2, 7, 24)] * 2


@pytest.mark.parametrize("chunk", [1, 2])
def test_activation_checkpointing_same_loss_and_grads(chunk):
    x = ids()
    results = []
    for ckpt in (False, True):
        model = tiny(checkpoint_activations=ckpt, checkpoint_num_layers=chunk, hidden_dropout=0.2,
                     attention_dropout=0.2).train()
        torch.manual_seed(5)
        loss = model(x)[0].logsumexp(-1).mean()
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b)
    for name, grad in grads_a.items():
        torch.testing.assert_close(grads_b[name], grad, msg=name)


def test_checkpointing_frees_activations():
    """Checkpointed layers keep only their inputs for backward: fewer saved tensors."""
    x = ids(2, 16)

    def saved_count(ckpt: bool) -> int:
        model = tiny(num_layers=4, checkpoint_activations=ckpt).train()
        count = 0

        def pack(t):
            nonlocal count
            count += 1
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x)[0].sum()
        return count

    assert saved_count(True) < saved_count(False) / 2


def test_no_bias_and_no_final_layernorm_options_round_trip():
    model = BaseModel(BaseModel.get_args(**TINY), use_bias=False, use_final_layernorm=False)
    names = set(model.state_dict())
    assert not any(n.endswith("query_key_value.bias") for n in names)
    assert not any(n.startswith("transformer.final_layernorm") for n in names)
    config = model.get_model_config()
    assert (config["use_bias"], config["use_final_layernorm"]) == (False, False)
    assert set(BaseModel.from_model_config(config).state_dict()) == names
