"""SAT's finetune mixins (issue 12, item 5): with the trunk frozen each trains (gradients reach only its
parameters and the loss falls), a checkpoint with it reloads, and its weights alone can be saved and loaded."""
import argparse

import pytest
import torch
from safetensors.torch import load_file, save_file

from sat_accel.errors import ConfigError
from sat_accel.model import BertModel
from sat_accel.model.finetune import load_mixin_state_dict, mixin_state_dict
from sat_accel.model.mixins import AdapterMixin, FFADDMixin, LoraMixin, LoRAMixin, PrefixTuningMixin
from sat_accel.model.loading import from_pretrained
from sat_accel.training import checkpoint as ckpt

ARCH = dict(num_layers=2, hidden_size=32, num_attention_heads=4, vocab_size=50, max_sequence_length=16,
            hidden_dropout=0.0, attention_dropout=0.0)

# name -> (constructor from args, add with reinit=True, substring that marks its parameter names)
CASES = {
    "prefix": (lambda a: PrefixTuningMixin(a.num_layers, a.hidden_size // a.num_attention_heads,
                                           a.num_attention_heads, 3), False, "mixins.prefix."),
    "lora": (lambda a: LoraMixin(a.num_layers, r=4, lora_alpha=8, layer_range=[1]), True, ".matrix_"),
    "adapter": (lambda a: AdapterMixin(a.num_layers, a.hidden_size, 8), False, "mixins.adapter."),
    "ffadd": (lambda a: FFADDMixin(a.hidden_size, a.num_layers, r=4), False, "mixins.ffadd."),
}


def _tuned_class(name: str) -> type:
    factory, reinit, _ = CASES[name]

    def __init__(self, args, **kwargs):
        BertModel.__init__(self, args, **kwargs)
        self.del_mixin("bert-final")  # the tests regress the final hidden states: no head needed
        self.add_mixin(name, factory(args), reinit=reinit)

    return type(f"Tuned{name.title()}", (BertModel,), {"__init__": __init__})


TUNED = {name: _tuned_class(name) for name in CASES}


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    torch.manual_seed(0)
    base = BertModel(BertModel.get_args(**ARCH))
    return ckpt.save_model_folder(str(tmp_path_factory.mktemp("base") / "bert"), base.state_dict(),
                                  base.get_model_config())


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 50, (4, 8), generator=g)
    mask = torch.ones(4, 1, 1, 8)
    mask[1, ..., 6:] = 0
    return ids, mask, torch.randn(4, 8, 32, generator=g)


def hidden_loss(model) -> torch.Tensor:
    """Regress the final hidden states onto fixed random targets (any mixin can move them)."""
    ids, mask, target = batch()
    hidden = model.encode(ids, None, mask, token_type_ids=torch.zeros_like(ids))
    return torch.nn.functional.mse_loss(hidden.float(), target)


def freeze_trunk(model, marker: str) -> list[str]:
    trainable = []
    for n, p in model.named_parameters():
        p.requires_grad_(marker in n)
        if marker in n:
            trainable.append(n)
    return trainable


def finetuned(name, base_folder, steps=15):
    model, _ = from_pretrained(TUNED[name], base_folder, argparse.Namespace(mode="finetune"))
    trainable = freeze_trunk(model, CASES[name][2])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    losses = []
    for _ in range(steps):
        loss = hidden_loss(model)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model, trainable, losses


@pytest.mark.parametrize("name", sorted(CASES))
def test_mixin_loads_onto_a_pretrained_trunk_and_trains_only_its_parameters(name, base_folder):
    model, _ = from_pretrained(TUNED[name], base_folder, argparse.Namespace(mode="finetune"))
    base, _ = from_pretrained(BertModel, base_folder, argparse.Namespace(mode="finetune"))
    trunk = {k: v for k, v in base.state_dict().items() if "bert-final" not in k}
    mixin_keys = [k for k in model.state_dict() if CASES[name][2] in k]
    assert mixin_keys
    for key, value in trunk.items():  # the trunk is the pretrained one (LoRA keeps the original weights in place)
        torch.testing.assert_close(model.state_dict()[key], value)
    trainable = freeze_trunk(model, CASES[name][2])
    hidden_loss(model).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(grads[n] is None for n in grads if n not in trainable)
    assert all(grads[n] is not None for n in trainable)
    assert any(grads[n].abs().sum() > 0 for n in trainable)
    _, _, losses = finetuned(name, base_folder)
    assert losses[-1] < losses[0] - 0.01 and losses[-1] == min(losses), losses  # frozen trunk: small but steady


@pytest.mark.parametrize("name", sorted(CASES))
def test_finetuned_checkpoint_reloads_and_mixin_weights_alone_round_trip(name, base_folder, tmp_path):
    model, trainable, _ = finetuned(name, base_folder, steps=3)
    model.eval()
    with torch.no_grad():
        expected = hidden_loss(model)
    folder = ckpt.save_model_folder(str(tmp_path / "full"), model.state_dict(), model.get_model_config())
    reloaded, _ = from_pretrained(TUNED[name], folder, argparse.Namespace(mode="inference"))
    with torch.no_grad():
        torch.testing.assert_close(hidden_loss(reloaded), expected)

    small = mixin_state_dict(model)
    assert set(trainable) <= set(small) and all(k.startswith("mixins.") or ".matrix_" in k for k in small)
    assert sum(v.numel() for v in small.values()) < sum(v.numel() for v in model.state_dict().values()) / 3
    save_file({k: v.contiguous() for k, v in small.items()}, str(tmp_path / "mixin.safetensors"))
    fresh, _ = from_pretrained(TUNED[name], base_folder, argparse.Namespace(mode="finetune"))
    fresh.eval()
    load_mixin_state_dict(fresh, load_file(str(tmp_path / "mixin.safetensors")))
    with torch.no_grad():
        torch.testing.assert_close(hidden_loss(fresh), expected)


@pytest.mark.parametrize("name", sorted(CASES))
def test_mixin_trains_under_bf16_autocast(name, base_folder):
    model, _ = from_pretrained(TUNED[name], base_folder, argparse.Namespace(mode="finetune"))
    trainable = freeze_trunk(model, CASES[name][2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = hidden_loss(model)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(dict(model.named_parameters())[n].grad).all()
                                        for n in trainable)


def test_lora_starts_as_the_base_model_and_merge_keeps_the_function(base_folder):
    base, _ = from_pretrained(BertModel, base_folder, argparse.Namespace(mode="inference"))
    base.del_mixin("bert-final")
    model, _ = from_pretrained(TUNED["lora"], base_folder, argparse.Namespace(mode="finetune"))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(hidden_loss(model), hidden_loss(base))  # B = 0 at the start
        for n, p in model.named_parameters():
            if "matrix_B" in n:
                p.normal_(std=0.1)
        before = hidden_loss(model)
        model.get_mixin("lora").merge_lora()
        torch.testing.assert_close(hidden_loss(model), before, rtol=1e-5, atol=1e-5)
    assert not any("matrix_" in k for k in model.state_dict())


def test_prefix_tuning_extends_padding_masks_and_keeps_full_attention_masks():
    torch.manual_seed(0)
    args = BertModel.get_args(**ARCH)
    model = BertModel(args).eval()
    model.add_mixin("prefix", PrefixTuningMixin(2, 8, 4, 3))
    ids, mask, _ = batch()
    tt = torch.zeros_like(ids)
    with torch.no_grad():
        padded = model(ids, None, mask, token_type_ids=tt)[0]
        full = model(ids, None, None, token_type_ids=tt)[0]  # hooks get ones(1, 1)
        square = model(ids, None, torch.ones(8, 8), token_type_ids=tt)[0]
    torch.testing.assert_close(full, square)
    torch.testing.assert_close(padded[0], full[0])  # row 0 has no padding
    assert not torch.allclose(padded[1], full[1])


def test_constructor_errors_say_what_to_do():
    with pytest.raises(ConfigError, match="rank r >= 1"):
        LoraMixin(2)
    with pytest.raises(ConfigError, match="bitsandbytes"):
        LoraMixin(2, r=4, qlora=True)
    with pytest.raises(ConfigError, match="use LoraMixin"):
        LoRAMixin(32)
    model = BertModel(BertModel.get_args(**ARCH))
    model.add_mixin("prefix", PrefixTuningMixin(2, 8, 2, 3))  # wrong head count
    ids, mask, _ = batch()
    with pytest.raises(ConfigError, match="heads"):
        model(ids, None, mask, token_type_ids=torch.zeros_like(ids))
