"""BertModel: SAT layout, token types, MLM head and the finetune idiom."""
import pytest
import torch
import torch.nn.functional as F

from sat_accel.errors import ConfigError
from sat_accel.model import BertModel, MLPHeadMixin, get_model_class, unregister_model

TINY = dict(num_layers=2, hidden_size=24, num_attention_heads=3, vocab_size=50, max_sequence_length=16,
            hidden_dropout=0.0, attention_dropout=0.0)


def tiny_bert(**overrides) -> BertModel:
    torch.manual_seed(0)
    return BertModel(BertModel.get_args(**{**TINY, **overrides})).eval()


def batch(b=2, s=6):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 50, (b, s), generator=g)
    types = torch.randint(0, 2, (b, s), generator=g)
    keep = torch.ones(b, s)
    keep[0, 4:] = 0
    return dict(input_ids=ids, position_ids=torch.arange(s).expand(b, s),
                attention_mask=keep[:, None, None, :], token_type_ids=types)


def test_bert_defaults_and_sat_parameter_names():
    args = BertModel.get_args()
    assert (args.layernorm_order, args.layernorm_epsilon, args.num_types) == ("post", 1e-12, 2)
    model = tiny_bert()
    keys = set(model.state_dict())
    assert {"mixins.bert-type.type_embeddings.weight", "mixins.bert-final.lm_head.dense.weight",
            "mixins.bert-final.lm_head.layer_norm.weight", "mixins.bert-final.lm_head.decoder.bias",
            "transformer.layers.1.attention.query_key_value.weight", "transformer.final_layernorm.bias"} <= keys
    assert model.mixins["bert-final"].lm_head.layer_norm.eps == 1e-12
    assert get_model_class("BertModel") is BertModel


def test_forward_gives_mlm_logits_and_token_types_matter():
    model = tiny_bert()
    inputs = batch()
    logits, *outputs = model(**inputs)
    assert logits.shape == (2, 6, 50) and len(outputs) == 2
    flipped = dict(inputs, token_type_ids=1 - inputs["token_type_ids"])
    assert not torch.allclose(model(**flipped)[0], logits)


def test_mlp_uses_exact_gelu():
    model = tiny_bert()
    mlp = model.transformer.layers[0].mlp
    x = torch.randn(3, 24) * 3
    torch.testing.assert_close(mlp(x, layer_id=0), mlp.dense_4h_to_h(F.gelu(mlp.dense_h_to_4h(x))))
    tanh = mlp.dense_4h_to_h(F.gelu(mlp.dense_h_to_4h(x), approximate="tanh"))
    assert not torch.allclose(mlp(x, layer_id=0), tanh, atol=1e-6, rtol=0)


def test_missing_token_type_ids_says_so():
    inputs = batch()
    del inputs["token_type_ids"]
    with pytest.raises(ConfigError, match="BertModel needs token_type_ids"):
        tiny_bert()(**inputs)


def test_finetune_idiom_classification_head():
    model = tiny_bert()
    args = BertModel.get_args(**TINY)
    with pytest.raises(ConfigError, match="conflicts with the one from 'bert-final'"):
        model.add_mixin("classification_head", MLPHeadMixin(args.hidden_size, 2048, 1))
    model.del_mixin("bert-final")
    model.add_mixin("classification_head", MLPHeadMixin(args.hidden_size, 2048, 1))
    logits, *_ = model(**batch())
    assert logits.shape == (2, 6, 1)  # head over every position, as in SAT
    pred = logits.squeeze(-1)[..., 0]
    labels = torch.tensor([0.0, 1.0])
    loss = F.binary_cross_entropy_with_logits(pred, labels)
    loss.backward()
    assert model.get_mixin("classification_head").layers[0].weight.grad.abs().sum() > 0
    assert not any(k.startswith("mixins.bert-final") for k in model.state_dict())


def test_classification_model_subclass_with_explicit_epsilon():
    """SAT's ClassificationModel passes layernorm_epsilon as a kwarg (which SAT itself rejects)."""

    class ClassificationModel(BertModel):
        def __init__(self, args, transformer=None, layernorm_epsilon=1e-12, **kwargs):
            super().__init__(args, transformer=transformer, layernorm_epsilon=layernorm_epsilon, **kwargs)
            self.del_mixin("bert-final")
            self.add_mixin("classification_head", MLPHeadMixin(args.hidden_size, 2048, 1))

        def disable_untrainable_params(self):
            self.transformer.word_embeddings.requires_grad_(False)

    try:
        args = BertModel.get_args(**TINY, layernorm_epsilon=1e-5)
        model = ClassificationModel(args)
        assert model.transformer.final_layernorm.eps == 1e-12
        model.disable_untrainable_params()
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        assert frozen == {"transformer.word_embeddings.weight"}
        config = model.get_model_config()
        assert config["model_class"] == "ClassificationModel" and config["num_types"] == 2
    finally:
        unregister_model("ClassificationModel")


def test_model_config_round_trip_and_num_types():
    model = tiny_bert(num_types=3)
    config = model.get_model_config()
    assert config["num_types"] == 3 and config["layernorm_order"] == "post"
    rebuilt = BertModel.from_model_config(config)
    assert rebuilt.get_mixin("bert-type").type_embeddings.num_embeddings == 3
    assert rebuilt.get_model_config() == config


def test_bert_builds_on_meta():
    with torch.device("meta"):
        model = BertModel(BertModel.get_args(**TINY, skip_init=True))
    assert all(p.is_meta for p in model.parameters())
