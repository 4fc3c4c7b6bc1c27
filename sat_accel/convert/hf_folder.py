"""Hugging Face (transformers) model folders: recognise one, read its weights, convert it to sat_accel.

The architecture-specific key and config mapping lives next to this module (dispatch.py picks the family by
config.json's model_type: hf_bert.py, hf_gpt2.py, hf_llama.py); this module only knows the folder layout of
transformers and writes the result with the checkpoint format's writer.
"""
from __future__ import annotations

import hashlib
import os

import torch

from ..checkpoint_format import (HF_CONFIG, LATEST, MODEL_CONFIG, TOKENIZER_DIR, WEIGHTS, WEIGHTS_INDEX, file_inside,
                                 read_json, read_safetensors, read_safetensors_index, safe_torch_load,
                                 save_model_folder)
from ..errors import CheckpointError
from .dispatch import family_of, hf_to_sat_checkpoint
from .shape_check import check_shapes_fit_config

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
    if not isinstance(hf_config, dict):
        raise CheckpointError(f"{src}/{HF_CONFIG} holds a JSON {type(hf_config).__name__}, not a config object; "
                              "restore the folder's config.json from where the model came from.")
    family_of(hf_config)  # an unsupported model_type fails before the weights are read
    config, state = hf_to_sat_checkpoint(hf_config, read_hf_weights(src))
    # before writing: a folder that cannot load is never made
    check_shapes_fit_config(config, state, src, hf_config)
    tokenizer = {os.path.join(TOKENIZER_DIR, name): os.path.join(src, name) for name in HF_TOKENIZER_FILES
                 if os.path.isfile(os.path.join(src, name))}
    if tokenizer:  # portable: from_pretrained resolves it inside the folder (loading.resolve_tokenizer_type)
        config = {**config, "tokenizer_type": TOKENIZER_DIR}
    return save_model_folder(dst, state, config, max_shard_size, extra_files=tokenizer)


def source_fingerprint(folder: str) -> str:
    """Identifies a transformers folder's content, so an edited source is converted again: the bytes of the
    small files (config.json, the weight index, tokenizer files) and the size and modification time of every
    weight file (hashing gigabytes of weights on each load would cost more than converting again)."""
    digest = hashlib.sha256()
    for name in (HF_CONFIG, WEIGHTS_INDEX, *HF_TOKENIZER_FILES):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                digest.update(name.encode() + b"\0" + f.read() + b"\0")
    for path in _weight_files(folder):
        stat = os.stat(path)
        digest.update(f"{os.path.basename(path)}|{stat.st_size}|{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:12]


def _weight_files(folder: str) -> list[str]:
    """The weight files a conversion of `folder` reads: the shards an index names, else the one file."""
    index = os.path.join(folder, WEIGHTS_INDEX)
    if not os.path.isfile(index):
        return [hf_weights_file(folder)]
    weight_map = read_json(index, "Hugging Face weight index", "restore it from where the model came from.")
    names = weight_map.get("weight_map", {}).values() if isinstance(weight_map, dict) else ()
    return [file_inside(folder, name, index) for name in sorted(set(names)) if isinstance(name, str)
            and os.path.isfile(os.path.join(folder, name))]
