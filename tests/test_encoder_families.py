"""RoBERTa and ViT converted from transformers: outputs with padding, task heads, AutoModel, bad inputs."""
import pytest
import torch
import transformers

from sat_accel.convert.dispatch import hf_to_sat_checkpoint
from sat_accel.errors import CheckpointError, ConfigError
from sat_accel.model import AutoModel, RobertaModel, ViTModel
from sat_accel.model.official.roberta_model import roberta_position_ids
from sat_accel.model.registry import get_model_class

ROBERTA = dict(vocab_size=60, hidden_size=30, num_hidden_layers=2, num_attention_heads=5, intermediate_size=41,
               max_position_embeddings=24, layer_norm_eps=1e-5)
VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=16,
           patch_size=4, num_channels=3)


def perturbed(model):
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() or name.endswith("bias") or "token" in name or "position" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def converted(hf):
    config, state = hf_to_sat_checkpoint(hf.config.to_dict(), hf.state_dict())
    model = get_model_class(config["model_class"]).from_model_config(config).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert unexpected == [] and missing == []
    return model


def roberta_batch():
    ids = torch.randint(3, 60, (3, 10), generator=torch.Generator().manual_seed(0))
    keep = torch.ones(3, 10, dtype=torch.long)
    keep[1, 6:], keep[2, 3:] = 0, 0
    return ids.masked_fill(keep == 0, 1), keep  # pad id 1, as RoBERTa


@pytest.mark.parametrize("cls_name", ["RobertaForMaskedLM", "RobertaModel", "RobertaForSequenceClassification"])
def test_roberta_matches_transformers_with_padding(cls_name):
    config = transformers.RobertaConfig(**ROBERTA, architectures=[cls_name])
    torch.manual_seed(0)
    hf = perturbed(getattr(transformers, cls_name)(config))
    model = converted(hf)
    assert type(model) is RobertaModel and "bert-type" not in model.mixins
    ids, keep = roberta_batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=keep, output_hidden_states=True)
        hidden = model.encode(ids, attention_mask=keep[:, None, None, :])
        logits = model(ids, attention_mask=keep[:, None, None, :])[0]
    torch.testing.assert_close(hidden, ref.hidden_states[-1], atol=1e-5, rtol=0)
    if cls_name == "RobertaForMaskedLM":
        torch.testing.assert_close(logits, ref.logits, atol=1e-5, rtol=0)
    assert roberta_position_ids(ids, 1)[2].tolist() == [2, 3, 4] + [1] * 7


@pytest.mark.parametrize("cls_name", ["ViTForImageClassification", "ViTModel"])
def test_vit_matches_transformers(cls_name):
    config = transformers.ViTConfig(**VIT, num_labels=5, architectures=[cls_name])
    torch.manual_seed(0)
    hf = perturbed(getattr(transformers, cls_name)(config))
    model = converted(hf)
    pixels = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ids = torch.zeros(2, 1, dtype=torch.long)
    with torch.no_grad():
        ref = hf(pixel_values=pixels, output_hidden_states=True)
        out = model(ids, None, None, image=pixels)[0]
        hidden = model.encode(ids, image=pixels)
    if cls_name == "ViTModel":
        torch.testing.assert_close(out, ref.last_hidden_state, atol=1e-5, rtol=0)
    else:
        assert out.shape == (2, 5)
        torch.testing.assert_close(out, ref.logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(hidden, hf.vit.layernorm(ref.hidden_states[-1]), atol=1e-5, rtol=0)


def test_vit_from_scratch_and_errors():
    args = ViTModel.get_args(num_layers=1, hidden_size=32, num_attention_heads=4, image_size=[16, 8],
                             patch_size=4, num_classes=3)
    model = ViTModel(args)
    assert model.transformer.position_embeddings.weight.shape == (1 + 4 * 2, 32)
    assert model(torch.zeros(2, 1, dtype=torch.long), image=torch.randn(2, 3, 16, 8))[0].shape == (2, 3)
    with pytest.raises(ConfigError, match="needs image="):
        model(torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ConfigError, match="divisible by patch_size"):
        ViTModel(ViTModel.get_args(num_layers=1, hidden_size=32, num_attention_heads=4, image_size=[15, 16],
                                   patch_size=4))
    with pytest.raises(CheckpointError, match="hidden_act='relu'"):
        hf_to_sat_checkpoint({**transformers.ViTConfig(**VIT).to_dict(), "hidden_act": "relu"}, {})


def test_automodel_loads_roberta_and_vit_folders(tmp_path):
    torch.manual_seed(0)
    roberta = perturbed(transformers.RobertaForMaskedLM(transformers.RobertaConfig(**ROBERTA)))
    vit = perturbed(transformers.ViTForImageClassification(transformers.ViTConfig(**VIT, num_labels=4)))
    roberta.save_pretrained(tmp_path / "roberta")
    vit.save_pretrained(tmp_path / "vit")
    model, _ = AutoModel.from_pretrained(str(tmp_path / "roberta"), home_path=str(tmp_path / "home"))
    ids, keep = roberta_batch()
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(ids, attention_mask=keep[:, None, None, :])[0],
                                   roberta(input_ids=ids, attention_mask=keep).logits, atol=1e-5, rtol=0)
    model, _ = AutoModel.from_pretrained(str(tmp_path / "vit"), home_path=str(tmp_path / "home"))
    pixels = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(torch.zeros(1, 1, dtype=torch.long), image=pixels)[0],
                                   vit(pixel_values=pixels).logits, atol=1e-5, rtol=0)


def test_vit_reads_transformers_4_key_names():
    hf = transformers.ViTForImageClassification(transformers.ViTConfig(**VIT, num_labels=3))
    v4_names = {".attention.q_proj.": ".attention.attention.query.", ".attention.k_proj.": ".attention.attention.key.",
                ".attention.v_proj.": ".attention.attention.value.", ".attention.o_proj.": ".attention.output.dense.",
                ".mlp.fc1.": ".intermediate.dense.", ".mlp.fc2.": ".output.dense.", "vit.layers.": "vit.encoder.layer."}
    v4 = {}
    for key, value in hf.state_dict().items():
        for new, old in v4_names.items():
            key = key.replace(new, old)
        v4[key] = value
    assert "vit.encoder.layer.1.attention.attention.key.bias" in v4
    _, from_v5 = hf_to_sat_checkpoint(hf.config.to_dict(), hf.state_dict())
    _, from_v4 = hf_to_sat_checkpoint(hf.config.to_dict(), v4)
    assert from_v4.keys() == from_v5.keys() and all(torch.equal(from_v4[k], from_v5[k]) for k in from_v5)
