"""Hugging Face (transformers) model folders: recognise one, read its weights, convert it to sat_accel.

The architecture-specific key and config mapping lives next to this module (dispatch.py picks the family by
config.json's model_type: hf_bert.py, hf_gpt2.py, hf_llama.py); this module only knows the folder layout of
transformers and writes the result with the checkpoint format's writer.
"""
from __future__ import annotations

import os

import torch

from ..checkpoint_format import (HF_CONFIG, LATEST, MODEL_CONFIG, TOKENIZER_DIR, WEIGHTS, WEIGHTS_INDEX, read_json,
                                 read_safetensors, read_safetensors_index, safe_torch_load, save_model_folder)
from .dispatch import family_of, hf_to_sat_checkpoint

HF_PICKLE_WEIGHTS = "pytorch_model.bin"
HF_WEIGHT_FILES = (WEIGHTS, WEIGHTS_INDEX, HF_PICKLE_WEIGHTS)
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                      "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model", "spiece.model")


def is_hf_folder(path: str) -> bool:
    """A transformers-format folder (config.json + weights) rather than a sat_accel/SAT checkpoint."""
    if os.path.isfile(os.path.join(path, MODEL_CONFIG)) or os.path.isfile(os.path.join(path, LATEST)):
        return False
    return os.path.isfile(os.path.join(path, HF_CONFIG)) and any(
        os.path.isfile(os.path.join(path, w)) for w in HF_WEIGHT_FILES)


def hf_weights_file(folder: str) -> str:
    """The file whose size and date identify the weights of a transformers folder."""
    return next(os.path.join(folder, w) for w in HF_WEIGHT_FILES if os.path.isfile(os.path.join(folder, w)))


def read_hf_weights(folder: str) -> dict[str, torch.Tensor]:
    """State dict of a transformers folder: safetensors (single or sharded) or pytorch_model.bin."""
    if os.path.isfile(os.path.join(folder, WEIGHTS_INDEX)):
        return read_safetensors_index(folder)[0]
    if os.path.isfile(os.path.join(folder, WEIGHTS)):
        return read_safetensors(os.path.join(folder, WEIGHTS))[0]
    return safe_torch_load(os.path.join(folder, HF_PICKLE_WEIGHTS), what="Hugging Face weights",
                           advice="convert it to model.safetensors with transformers and retry.")


def convert_hf_folder(src: str, dst: str, max_shard_size: int | str = "5GB") -> str:
    """Write a sat_accel checkpoint folder at `dst` from a Hugging Face folder `src` (family by model_type)."""
    hf_config = read_json(os.path.join(src, HF_CONFIG), "Hugging Face config",
                          "restore the folder's config.json from where the model came from.")
    family_of(hf_config)  # an unsupported model_type fails before the weights are read
    config, state = hf_to_sat_checkpoint(hf_config, read_hf_weights(src))
    tokenizer = {os.path.join(TOKENIZER_DIR, name): os.path.join(src, name) for name in HF_TOKENIZER_FILES
                 if os.path.isfile(os.path.join(src, name))}
    if tokenizer:  # portable: from_pretrained resolves it inside the folder (loading.resolve_tokenizer_type)
        config = {**config, "tokenizer_type": TOKENIZER_DIR}
    return save_model_folder(dst, state, config, max_shard_size, extra_files=tokenizer)
