"""Hooks and mixins: collect_hooks_ resolution rules, add/del/get/reinit, MLPHeadMixin, registry."""
import copy
import logging

import pytest
import torch

from sat_accel.errors import CheckpointError, ConfigError
from sat_accel.model import (BaseMixin, BaseModel, MLPHeadMixin, get_model_class, register_model,
                             registered_models, unregister_model)
from sat_accel.model.transformer import attention_fn_default

TINY = dict(num_layers=2, hidden_size=16, num_attention_heads=2, vocab_size=30, max_sequence_length=12,
            hidden_dropout=0.0, attention_dropout=0.0)


def tiny(cls=BaseModel) -> BaseModel:
    torch.manual_seed(0)
    return cls(cls.get_args(**TINY)).eval()


X = torch.randint(0, 30, (2, 5), generator=torch.Generator().manual_seed(0))


class Doubler(BaseMixin):
    """non_conflict wrapper: doubles whatever the previous word embedding gave."""

    @BaseMixin.non_conflict
    def word_embedding_forward(self, input_ids, old_impl=None, **kw):
        return 2 * old_impl(input_ids, **kw)


class Recorder(BaseMixin):
    """non_conflict attention_fn that records calls and defers to the previous implementation."""

    def __init__(self, tag, log):
        super().__init__()
        self.tag, self.log = tag, log

    @BaseMixin.non_conflict
    def attention_fn(self, q, k, v, mask, dropout_fn, old_impl=None, **kw):
        self.log.append((self.tag, kw["layer_id"], old_impl.func.__self__.tag if hasattr(old_impl, "func") else "default"))
        return old_impl(q, k, v, mask, dropout_fn, **kw)


class ZeroHead(BaseMixin):
    def final_forward(self, logits, **kw):
        return torch.zeros_like(logits[..., :1])


class ReplacableHead(BaseMixin):
    @BaseMixin.replacable
    def final_forward(self, logits, **kw):
        return logits[..., :2]


def test_non_conflict_wraps_default_and_stacks_in_order():
    model = tiny()
    plain = model(X)[0]
    log = []
    model.add_mixin("a", Recorder("a", log))
    model.add_mixin("b", Recorder("b", log))
    torch.testing.assert_close(model(X)[0], plain)
    assert model.hook_origins["attention_fn"] == "b -> a -> default"
    assert log == [("b", 0, "a"), ("a", 0, "default"), ("b", 1, "a"), ("a", 1, "default")]


def test_non_conflict_for_hook_with_self_gets_default_bound_to_model():
    model = tiny()
    emb = model.transformer.word_embeddings(X)
    model.add_mixin("doubler", Doubler())
    assert model.hook_origins["word_embedding_forward"] == "doubler -> default"
    h = model.hooks["word_embedding_forward"](X)
    torch.testing.assert_close(h, 2 * emb)


def test_non_conflict_without_old_impl_is_rejected():
    class Bad(BaseMixin):
        @BaseMixin.non_conflict
        def mlp_forward(self, hidden_states, **kw):
            return hidden_states

    model = tiny()
    with pytest.raises(ConfigError, match="old_impl"):
        model.add_mixin("bad", Bad())
    assert "bad" not in model.mixins


def test_conflicting_hooks_raise_and_leave_model_unchanged():
    model = tiny()
    model.add_mixin("head", ZeroHead())
    with pytest.raises(ConfigError, match=r"final_forward of mixin 'other' conflicts with the one from 'head'"):
        model.add_mixin("other", MLPHeadMixin(16, 3))
    assert list(model.mixins) == ["head"] and model.hook_origins["final_forward"] == "head"
    assert model(X)[0].shape == (2, 5, 1)


def test_replacable_hook_is_replaced_with_warning(caplog):
    model = tiny()
    model.add_mixin("first", ReplacableHead())
    assert model(X)[0].shape == (2, 5, 2)
    with caplog.at_level(logging.WARNING):
        model.add_mixin("second", ZeroHead())
    assert "replaces" in caplog.text and model.hook_origins["final_forward"] == "second"
    assert model(X)[0].shape == (2, 5, 1)


def test_model_method_is_a_hook():
    class Scaled(BaseModel):
        def final_forward(self, logits, **kw):
            return logits.sum(-1, keepdim=True)

    try:
        model = tiny(Scaled)
        assert model.hook_origins["final_forward"] == "model"
        torch.testing.assert_close(model(X)[0], model.encode(X).sum(-1, keepdim=True))
    finally:
        unregister_model("Scaled")


def test_hooks_receive_kwargs_and_fill_per_layer_outputs():
    seen = []

    class Spy(BaseMixin):
        @BaseMixin.non_conflict
        def layer_forward(self, hidden_states, mask, old_impl=None, **kw):
            seen.append((kw["layer_id"], kw["extra"], tuple(kw["position_ids"].shape)))
            kw["output_this_layer"]["norm"] = hidden_states.norm()
            return old_impl(hidden_states, mask, **kw)

    model = tiny()
    model.add_mixin("spy", Spy())
    _, *outputs = model(X, extra="hello")
    assert seen == [(0, "hello", (2, 5)), (1, "hello", (2, 5))]
    assert [sorted(o) for o in outputs] == [["norm"], ["norm"]]


def test_add_get_del_mixin_and_parameter_names():
    model = tiny()
    head = MLPHeadMixin(16, 8, 1)
    model.add_mixin("classification_head", head)
    assert model.get_mixin("classification_head") is head and head.transformer is model.transformer
    keys = [k for k in model.state_dict() if k.startswith("mixins.")]
    assert keys == [f"mixins.classification_head.layers.{i}.{p}" for i in (0, 1) for p in ("weight", "bias")]
    assert not any(k.startswith("mixins.classification_head.transformer") for k in model.state_dict())
    assert model(X)[0].shape == (2, 5, 1)
    assert model.del_mixin("classification_head") is head
    assert model(X)[0].shape == (2, 5, 30) and "final_forward" not in model.hooks
    assert model.del_mixin("nope") is None  # SAT recipes delete 'bert-final' also where it was never built
    with pytest.raises(ConfigError, match="no mixin named 'nope'"):
        model.get_mixin("nope")


def test_add_mixin_bad_input():
    model = tiny()
    with pytest.raises(ConfigError, match="must subclass BaseMixin"):
        model.add_mixin("x", torch.nn.Linear(2, 2))
    model.add_mixin("x", Doubler())
    with pytest.raises(ConfigError, match="already exists"):
        model.add_mixin("x", Doubler())
    for bad_name in ("a.b", "", "double"):
        with pytest.raises(ConfigError, match="pick another name"):
            model.add_mixin(bad_name, Doubler())


def test_mlp_head_init_and_reinit():
    torch.manual_seed(0)
    head = MLPHeadMixin(64, 2048, 1)
    w = head.layers[0].weight
    assert w.std().item() == pytest.approx(0.005, rel=0.05) and torch.count_nonzero(head.layers[0].bias) == 0
    with torch.no_grad():
        w.fill_(1.0)
    model = tiny()
    model.add_mixin("h", head, reinit=True)
    assert w.std().item() == pytest.approx(0.005, rel=0.05)


def test_reinit_named_and_default_mixin_reinit_does_nothing():
    class WithLinear(BaseMixin):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)

    model = tiny()
    model.add_mixin("lin", WithLinear())
    model.add_mixin("head", MLPHeadMixin(16, 1))
    with torch.no_grad():
        for p in model.mixins.parameters():
            p.fill_(7.0)
    model.reinit(["lin"])
    assert (model.get_mixin("lin").proj.weight == 7).all()  # SAT: BaseMixin.reinit is a no-op
    assert (model.get_mixin("head").layers[0].weight == 7).all()
    model.reinit()
    assert not (model.get_mixin("head").layers[0].weight == 7).any()
    assert (model.get_mixin("lin").proj.weight == 7).all()
    with pytest.raises(ConfigError):
        model.reinit(["missing"])


def test_shared_transformer_uses_each_models_hooks():
    a = tiny()
    b = BaseModel(BaseModel.get_args(**TINY), transformer=a.transformer).eval()
    b.add_mixin("head", ZeroHead())
    assert b(X)[0].shape == (2, 5, 1) and a(X)[0].shape == (2, 5, 30)


def test_deepcopy_keeps_hooks_on_the_copy():
    model = tiny()
    model.add_mixin("head", MLPHeadMixin(16, 1))
    clone = copy.deepcopy(model)
    with torch.no_grad():
        clone.get_mixin("head").layers[0].bias.fill_(3.0)
    assert torch.allclose(clone(X)[0] - model(X)[0], torch.full((2, 5, 1), 3.0))


def test_attention_fn_default_matches_softmax_attention():
    q, k, v = torch.randn(3, 2, 4, 5, 8).unbind(0)
    keep = torch.rand(2, 1, 5, 5) > 0.4
    keep[..., 0] = True
    scores = (q @ k.transpose(-1, -2) / 8 ** 0.5).masked_fill(~keep, float("-inf"))
    torch.testing.assert_close(attention_fn_default(q, k, v, keep.float()), scores.softmax(-1) @ v)


def test_registry_subclasses_register_and_unknown_names_list_known(caplog):
    class RegistryProbe(BaseModel):
        pass

    try:
        assert get_model_class("RegistryProbe") is RegistryProbe
        assert {"BaseModel", "BertModel", "RegistryProbe"} <= set(registered_models())
        with caplog.at_level(logging.WARNING):
            register_model(RegistryProbe)  # same object: silent
        assert caplog.text == ""
        with caplog.at_level(logging.WARNING):
            register_model(BaseModel, name="RegistryProbe")
        assert "replaced" in caplog.text and get_model_class("RegistryProbe") is BaseModel
    finally:
        unregister_model("RegistryProbe")
    with pytest.raises(CheckpointError, match=r"'RegistryProbe' is not registered \(known: .*BertModel"):
        get_model_class("RegistryProbe")
