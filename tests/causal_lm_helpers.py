"""Tiny random transformers causal LMs and their sat_accel conversions, shared by the GPT-2/LLaMA tests."""
import torch
import transformers

from sat_accel.convert.dispatch import hf_to_sat_checkpoint
from sat_accel.model import CachedAutoregressiveMixin
from sat_accel.model.registry import get_model_class

VOCAB = 97
HF_CONFIGS = {  # tiny: odd sizes, GQA, explicit head_dim, rope scaling, qkv bias, tied and untied heads
    "gpt2": lambda: transformers.GPT2Config(vocab_size=VOCAB, n_embd=40, n_layer=2, n_head=5, n_positions=48),
    "gpt2-inner": lambda: transformers.GPT2Config(vocab_size=VOCAB, n_embd=24, n_layer=3, n_head=3, n_positions=32,
                                                  n_inner=50, layer_norm_epsilon=1e-6),
    "llama-gqa": lambda: transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, max_position_embeddings=64, rope_theta=500.0),
    "llama3-rope-headdim": lambda: transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=64, tie_word_embeddings=True,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 16}),
    "llama-linear-rope": lambda: transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=40, num_hidden_layers=1, num_attention_heads=4,
        max_position_embeddings=64, rope_scaling={"rope_type": "linear", "factor": 2.0}, rms_norm_eps=1e-5),
    "mistral": lambda: transformers.MistralConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, sliding_window=None),
    "mistral-window4": lambda: transformers.MistralConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, sliding_window=4),
    "qwen2": lambda: transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True),
}
HF_CLASSES = {"gpt2": transformers.GPT2LMHeadModel, "llama": transformers.LlamaForCausalLM,
              "mistral": transformers.MistralForCausalLM, "qwen2": transformers.Qwen2ForCausalLM}


def hf_causal_lm(name: str, seed: int = 0):
    """A random tiny transformers model (eval), norms perturbed so a misplaced norm shows."""
    config = HF_CONFIGS[name]()
    torch.manual_seed(seed)
    model = HF_CLASSES[config.model_type](config)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "norm" in key or "ln_" in key:
                p.add_(torch.randn_like(p) * 0.1)
            elif key.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def converted(hf, cached: bool = False):
    """(sat_accel model in eval mode, its model_config dict) with the HF weights loaded strictly."""
    config, state = hf_to_sat_checkpoint(hf.config.to_dict(), hf.state_dict())
    model = get_model_class(config["model_class"]).from_model_config(config).eval()
    model.load_state_dict(state, strict=True)
    if cached:
        model.add_mixin("auto-regressive", CachedAutoregressiveMixin())
    return model, config
