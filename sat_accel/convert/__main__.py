"""`python -m sat_accel.convert SRC DST`: write a sat_accel checkpoint folder from a Hugging Face folder
(BERT, RoBERTa, GPT-2, LLaMA/Mistral/Qwen2, ViT: the family comes from config.json's model_type)."""
from __future__ import annotations

import argparse
import logging
import sys

from ..errors import SatAccelError
from .hf_folder import convert_hf_folder, is_hf_folder


def main(argv: list[str] | None = None) -> int:
    """Convert; exit code 0 on success, 2 with one sentence on stderr for a user mistake."""
    parser = argparse.ArgumentParser(prog="python -m sat_accel.convert", description=__doc__)
    parser.add_argument("src", help="Hugging Face folder with config.json and model.safetensors/pytorch_model.bin")
    parser.add_argument("dst", help="new sat_accel folder to create (must not exist)")
    parser.add_argument("--max-shard-size", default="5GB", help="largest model.safetensors shard, e.g. 500MB")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if not is_hf_folder(args.src):
            parser.error(f"{args.src} is not a Hugging Face model folder (needs config.json and "
                         "model.safetensors or pytorch_model.bin).")
        folder = convert_hf_folder(args.src, args.dst, args.max_shard_size)
    except SatAccelError as e:
        parser.error(str(e))
    logging.getLogger(__name__).info("Wrote %s; load it with AutoModel.from_pretrained(%r).", folder, folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
