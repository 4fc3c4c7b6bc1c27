"""KV-cached greedy generation: sat_accel's filling_sequence vs transformers' generate, same tiny LLaMA, CPU.

Both decode greedily (ours: BaseStrategy(top_k=1) over CachedAutoregressiveMixin; transformers:
generate(do_sample=False) with its default dynamic KV cache) from the same prompt, in one process,
alternating runs; the script checks that both emit the same tokens and prints the median tokens/s.

    python bench/generate.py [--new-tokens 128] [--reps 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import transformers

from sat_accel.convert.dispatch import hf_to_sat_checkpoint
from sat_accel.generation import BaseStrategy, filling_sequence
from sat_accel.model import CachedAutoregressiveMixin, LLaMAModel

CONFIG = dict(vocab_size=1000, hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8,
              num_key_value_heads=2, max_position_embeddings=512)


def build(seed: int = 0):
    """(transformers LlamaForCausalLM, the same weights as sat_accel LLaMAModel with the KV-cache mixin)."""
    torch.manual_seed(seed)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIG)).eval()
    config, state = hf_to_sat_checkpoint(hf.config.to_dict(), hf.state_dict())
    ours = LLaMAModel.from_model_config(config).eval()
    ours.load_state_dict(state, strict=True)
    ours.add_mixin("auto-regressive", CachedAutoregressiveMixin())
    return hf, ours


def run_ours(model, prompt: torch.Tensor, new: int) -> torch.Tensor:
    seq = torch.cat([prompt, torch.full((new,), -1)])
    return filling_sequence(model, seq, 1, BaseStrategy(top_k=1))[0][0]


def run_hf(model, prompt: torch.Tensor, new: int) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(prompt[None], attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                              max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0,
                              eos_token_id=None)[0]


def timed(fn, *args) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    cli = parser.parse_args()
    torch.set_num_threads(cli.threads)
    hf, ours = build()
    prompt = torch.randint(0, CONFIG["vocab_size"], (cli.prompt_tokens,), generator=torch.Generator().manual_seed(1))
    run_ours(ours, prompt, 8), run_hf(hf, prompt, 8)  # warm-up (first-call costs)
    times = {"sat_accel": [], "transformers": []}
    for _ in range(cli.reps):
        t_ours, tokens_ours = timed(run_ours, ours, prompt, cli.new_tokens)
        t_hf, tokens_hf = timed(run_hf, hf, prompt, cli.new_tokens)
        if not torch.equal(tokens_ours, tokens_hf):
            raise SystemExit("sat_accel and transformers generated different tokens; the comparison is void.")
        times["sat_accel"].append(t_ours)
        times["transformers"].append(t_hf)
    rate = {k: cli.new_tokens / statistics.median(v) for k, v in times.items()}
    print(f"tiny LLaMA {CONFIG}, prompt {cli.prompt_tokens}, {cli.new_tokens} new tokens, batch 1, "
          f"{cli.threads} thread(s), median of {cli.reps}; identical tokens: yes")
    for name, value in rate.items():
        print(f"  {name:13s} {value:8.1f} tokens/s")
    print(f"  ratio sat_accel / transformers: {rate['sat_accel'] / rate['transformers']:.2f}x")


if __name__ == "__main__":
    main()
