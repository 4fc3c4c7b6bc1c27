"""SAT's model-side semantics that SAT client code relies on (issue 12, item 6): reinit is a no-op by
default, hooks see SAT's masks, the pre-parser Namespace idiom, del_mixin of an absent mixin, the
cross_attention_forward / routing_forward hook names."""
import argparse

import pytest
import torch

from sat_accel import get_args
from sat_accel.model import BaseMixin, BaseModel, BertModel
from sat_accel.model.loading import from_pretrained
from sat_accel.training import checkpoint as ckpt

TINY = dict(num_layers=2, hidden_size=16, num_attention_heads=2, vocab_size=30, max_sequence_length=12,
            hidden_dropout=0.0, attention_dropout=0.0)


def ids(b=2, s=5):
    return torch.randint(0, 30, (b, s), generator=torch.Generator().manual_seed(0))


class PositionMixin(BaseMixin):
    """A SAT-style mixin that initialises itself in its constructor and has no reinit of its own."""

    def __init__(self, rows, hidden):
        super().__init__()
        self.table = torch.nn.Embedding(rows, hidden)
        torch.nn.init.normal_(self.table.weight, std=0.02)

    def position_embedding_forward(self, position_ids, **kw):
        return self.table(position_ids)


class WithPositionMixin(BaseModel):
    def __init__(self, args, **kwargs):
        super().__init__(args, **kwargs)
        self.add_mixin("pos", PositionMixin(args.max_sequence_length, args.hidden_size))


def test_missing_mixin_keeps_its_constructor_init_when_loaded_for_finetuning(tmp_path):
    torch.manual_seed(0)
    base = BaseModel(BaseModel.get_args(**TINY))
    folder = ckpt.save_model_folder(str(tmp_path / "m"), base.state_dict(), base.get_model_config())
    model, _ = from_pretrained(WithPositionMixin, folder, argparse.Namespace(mode="finetune"))
    std = model.get_mixin("pos").table.weight.std().item()
    assert std == pytest.approx(0.02, rel=0.2)  # the old default reinit reset it to N(0, 1)
    torch.testing.assert_close(model.transformer.word_embeddings.weight, base.transformer.word_embeddings.weight)


class MaskSpy(BaseMixin):
    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    @BaseMixin.non_conflict
    def attention_fn(self, q, k, v, mask, dropout_fn, old_impl=None, **kw):
        self.seen.append(tuple(mask.shape))
        assert mask.numel() >= 1  # SAT's PrefixTuningMixin calls mask.numel() on whatever it gets
        return old_impl(q, k, v, mask, dropout_fn, **kw)


def test_hooks_receive_ones_1_1_when_no_mask_is_given():
    torch.manual_seed(0)
    model = BaseModel(BaseModel.get_args(**TINY)).eval()
    full = model(ids())[0]
    seen = []
    model.add_mixin("spy", MaskSpy(seen))
    torch.testing.assert_close(model(ids())[0], full)
    assert seen == [(1, 1), (1, 1)]


def test_two_dimensional_s_by_s_mask_equals_the_4d_one():
    torch.manual_seed(0)
    model = BaseModel(BaseModel.get_args(**TINY)).eval()
    causal = torch.ones(5, 5).tril()
    torch.testing.assert_close(model(ids(), None, causal)[0], model(ids(), None, causal[None, None])[0])
    torch.testing.assert_close(model(ids(), None, causal)[0], model(ids(), None, -1)[0])
    assert not torch.allclose(model(ids(), None, causal)[0], model(ids())[0])


@pytest.mark.parametrize("family", ["GPT2Model", "LLaMAModel"])
def test_sat_pre_parser_namespace_idiom_with_every_family(family):
    import sat_accel.model.official as official

    cls = getattr(official, family)
    py_parser = cls.add_model_specific_args(argparse.ArgumentParser(add_help=False))
    known, args_list = py_parser.parse_known_args(["--num-layers", "2", "--num-multi-query-heads", "2"])
    args = argparse.Namespace(**vars(get_args(args_list)), **vars(known))
    assert (args.num_layers, args.num_multi_query_heads) == (2, 2)


def test_sat_pre_parser_namespace_idiom_with_bert_model_specific_args():
    py_parser = argparse.ArgumentParser(add_help=False)
    py_parser.add_argument("--sample_length", type=int, default=496)
    py_parser = BertModel.add_model_specific_args(py_parser)
    known, args_list = py_parser.parse_known_args(["--sample_length", "32", "--num-layers", "2", "--num-types", "3"])
    args = get_args(args_list)
    args = argparse.Namespace(**vars(args), **vars(known))  # SAT's idiom; raised "multiple values" before
    assert (args.sample_length, args.num_layers, args.num_types) == (32, 2, 3)
    assert (BertModel.get_args().layernorm_order, BertModel.get_args().layernorm_epsilon) == ("post", 1e-12)


def test_bert_accepts_sat_constructor_keywords_and_del_mixin_of_absent_head():
    args = BertModel.get_args(**TINY, mlm_head=False)
    model = BertModel(args, parallel_output=True, layernorm_epsilon=1e-12)  # SAT's bert_ft_model passes both
    assert "bert-final" not in model.mixins
    assert model.del_mixin("bert-final") is None


class CrossAndRouting(BaseMixin):
    def cross_attention_forward(self, hidden_states, cross_attention_mask, encoder_outputs, **kw):
        return hidden_states

    @BaseMixin.non_conflict
    def routing_forward(self, hidden_states, old_impl=None, **kw):
        return old_impl(hidden_states, **kw)


def test_cross_attention_and_routing_hooks_resolve_like_the_others():
    model = BaseModel(BaseModel.get_args(**TINY))
    model.add_mixin("x", CrossAndRouting())
    assert model.hook_origins["cross_attention_forward"] == "x"
    assert model.hook_origins["routing_forward"] == "x -> default"
    with pytest.raises(Exception, match="no experts"):
        model.hooks["routing_forward"](torch.zeros(1, 2, 16))


def _train_and_save(tmp_path, model, forward):
    import glob
    import json

    import tiny_task
    from sat_accel import training_main

    args = get_args(["--train-data", "tiny:64", "--split", "1", "--batch-size", "16", "--train-iters", "2",
                     "--num-workers", "0", "--save", str(tmp_path), "--experiment-name", "m", "--no-progress"])
    training_main(args, model, forward, tiny_task.create_dataset)
    (run,) = glob.glob(str(tmp_path / "m-*"))
    with open(f"{run}/model_config.json") as f:
        return run, json.load(f)


def test_model_config_of_a_plain_module_records_only_its_class(tmp_path):
    import torch.nn.functional as F

    def forward(it, model, args, timers):
        batch = next(it)
        return F.cross_entropy(model(batch["x"]), batch["y"])

    _, config = _train_and_save(tmp_path, torch.nn.Sequential(torch.nn.Linear(8, 2)), forward)
    assert config == {"model_class": "Sequential"}  # not get_args' hidden 1024 / 6 layers


def test_transformers_model_checkpoint_reloads_without_the_users_code(tmp_path):
    import os

    import transformers

    from sat_accel.model import AutoModel

    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=16, num_labels=2)
    hf_model = transformers.BertForSequenceClassification(config)

    def forward(it, model, args, timers):
        batch = next(it)
        return model(input_ids=(batch["x"].abs() * 10).long().clamp(0, 49), labels=batch["y"]).loss

    run, model_config = _train_and_save(tmp_path, hf_model, forward)
    assert model_config == {"model_class": "BertForSequenceClassification", "library": "transformers"}
    ids = torch.randint(0, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    hf_model.eval()
    with torch.no_grad():
        expected = hf_model(input_ids=ids).logits
    reloaded, _ = AutoModel.from_pretrained(run)
    by_transformers = transformers.AutoModelForSequenceClassification.from_pretrained(os.path.join(run, "2"))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected)
        torch.testing.assert_close(by_transformers.eval()(input_ids=ids).logits, expected)
