"""SAT's generation API over the KV cache: greedy and beam search against transformers' generate,
sampling filters, end tokens, forced tokens, streaming, continuing from mems, and clear errors."""
import pytest
import torch

from causal_lm_helpers import VOCAB, converted, hf_causal_lm
from sat_accel.errors import ConfigError
from sat_accel.generation import (BaseStrategy, BeamSearchStrategy, evaluate_perplexity, filling_sequence,
                                  get_masks_and_position_ids_default, stream_filling_sequence, top_k_logits)


def prompt_and_seq(length: int = 6, new: int = 14, seed: int = 3):
    prompt = torch.randint(0, VOCAB, (length,), generator=torch.Generator().manual_seed(seed))
    return prompt, torch.cat([prompt, torch.full((new,), -1)])


def hf_generate(hf, prompt, new, **kw):
    return hf.generate(prompt[None], attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                       max_new_tokens=new, min_new_tokens=new, pad_token_id=0, eos_token_id=None, **kw)


@pytest.mark.parametrize("name", ["gpt2", "llama-gqa", "llama3-rope-headdim", "qwen2"])
def test_greedy_equals_transformers_generate(name):
    hf = hf_causal_lm(name)
    model, _ = converted(hf, cached=True)
    prompt, seq = prompt_and_seq()
    tokens, mems = filling_sequence(model, seq, batch_size=2, strategy=BaseStrategy(top_k=1))
    expected = hf_generate(hf, prompt, 14, do_sample=False)
    assert tokens.shape == (2, 20)
    assert torch.equal(tokens, expected.expand(2, -1))
    layers, nkv_d2 = model.transformer.num_layers, mems.shape[-1]
    assert mems.shape[:3] == (layers, 2, 19)  # every position but the last sampled one is cached
    attn = model.transformer.layers[0].attention
    assert nkv_d2 == 2 * attn.num_kv_heads * attn.head_dim


@pytest.mark.parametrize("name", ["gpt2", "llama-gqa"])
def test_beam_search_matches_transformers_when_no_beam_ends(name):
    hf = hf_causal_lm(name)
    model, _ = converted(hf, cached=True)
    prompt, seq = prompt_and_seq(new=8)
    strategy = BeamSearchStrategy(num_beams=3, deterministic=True, length_penalty=1.0)
    beams, mems = filling_sequence(model, seq, batch_size=3, strategy=strategy)
    expected = hf_generate(hf, prompt, 8, do_sample=False, num_beams=3, early_stopping=True)
    assert mems is None and len(beams) == 3
    assert torch.equal(beams[0], expected[0])


def test_sampling_respects_top_k_end_tokens_and_forced_tokens():
    hf = hf_causal_lm("llama-gqa")
    model, _ = converted(hf, cached=True)
    prompt, seq = prompt_and_seq(new=10)
    seq[8] = 5  # forced token between sampled ones
    torch.manual_seed(0)
    steps = list(stream_filling_sequence(model, seq, 4, BaseStrategy(top_k=3, temperature=0.7)))
    assert len(steps) == 9  # one per -1 slot
    tokens, logits, _ = steps[0]
    assert tokens.shape == (4, 7) and logits.shape == (4, VOCAB)
    top3 = logits.topk(3, dim=-1).indices
    assert all(tokens[i, -1] in top3[i] for i in range(4))
    final = steps[-1][0]
    assert (final[:, 8] == 5).all() and torch.equal(final[:, :6], prompt.expand(4, -1))

    greedy_first = filling_sequence(model, prompt_and_seq(new=10)[1], 1, BaseStrategy(top_k=1))[0][0, 6]
    stop = BaseStrategy(top_k=1, end_tokens=[int(greedy_first)])
    tokens, _ = filling_sequence(model, prompt_and_seq(new=10)[1], 1, stop)
    assert tokens.shape == (1, 7) and not stop.is_done  # stopped at the end token; finalize reset the state


def test_mems_continue_a_cached_context():
    hf = hf_causal_lm("gpt2")
    model, _ = converted(hf, cached=True)
    prompt, seq = prompt_and_seq(new=6)
    full, _ = filling_sequence(model, seq, 1, BaseStrategy(top_k=1))
    first, mems = filling_sequence(model, seq[:9], 1, BaseStrategy(top_k=1))
    assert torch.equal(first, full[:, :9])
    rest = torch.cat([full[0, :9], torch.full((3,), -1)])
    # the cache holds positions 0..7; SAT's default masks/positions cover the whole of `rest`
    tail, _ = filling_sequence(model, rest, 1, BaseStrategy(top_k=1), mems=mems[:, :, :8],
                               get_masks_and_position_ids=get_masks_and_position_ids_default)
    assert torch.equal(tail, full)


def test_errors_are_one_sentence():
    hf = hf_causal_lm("gpt2")
    plain, _ = converted(hf)
    with pytest.raises(ConfigError, match="CachedAutoregressiveMixin"):
        filling_sequence(plain, prompt_and_seq()[1], 1, BaseStrategy(top_k=1))
    with pytest.raises(ConfigError, match="1-D tensor"):
        filling_sequence(plain, torch.tensor([-1, -1]), 1)
    with pytest.raises(ConfigError, match="temperature"):
        BaseStrategy(temperature=0)


def test_top_k_top_p_filters_and_perplexity():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert (top_k_logits(logits.clone(), top_k=2) > -1000).tolist() == [[False, True, True, False]]
    # softmax([1, 3, 2, 0]) ~ [.09, .64, .24, .03]: top_p=0.7 keeps 3 and 2 (the first that crosses stays)
    assert (top_k_logits(logits.clone(), top_p=0.7) > -1000).tolist() == [[False, True, True, False]]
    hf = hf_causal_lm("llama-gqa")
    model, _ = converted(hf)
    tokens = torch.randint(0, VOCAB, (2, 8))
    mask = torch.ones(1, 1, 8, 8).tril()
    with torch.no_grad():
        ref = -hf(input_ids=tokens, labels=tokens).loss
    per_row = evaluate_perplexity(model, tokens, mask, None, torch.ones(2, 8))
    torch.testing.assert_close(per_row.mean(), ref, atol=1e-5, rtol=0)


def test_a_mask_edited_in_place_between_forwards_is_seen():
    hf = hf_causal_lm("gpt2")
    model, _ = converted(hf)
    ids = torch.randint(0, VOCAB, (1, 6))
    mask = torch.ones(1, 1, 6, 6).tril()
    with torch.no_grad():
        causal = model(ids, None, mask)[0]
        mask.fill_(1.0)  # same object, now full attention
        full = model(ids, None, mask)[0]
        expected = model(ids, None, torch.ones(1, 1, 6, 6))[0]
    assert not torch.allclose(causal, full)
    torch.testing.assert_close(full, expected, atol=0, rtol=0)


def test_max_memory_length_keeps_a_window_of_the_cache():
    """SAT sliced the mask as if nothing were trimmed (shape error once the cache was full); the mask now
    covers exactly the cached window plus the new token, i.e. attention over the last positions only."""
    hf = hf_causal_lm("llama-gqa")
    model, _ = converted(hf, cached=True)
    prompt, seq = prompt_and_seq(length=6, new=10)
    tokens, mems = filling_sequence(model, seq, 1, BaseStrategy(top_k=1), max_memory_length=8)
    assert tokens.shape == (1, 16) and mems.shape[2] == 8
    # reference: recompute every step with a causal mask limited to the last 9 positions (8 cached + 1 new)
    ids = tokens[:, :6]
    for _ in range(10):
        s = ids.shape[1]
        rows, cols = torch.arange(s)[:, None], torch.arange(s)[None, :]
        window = ((cols <= rows) & (cols > rows - 9)).float()
        window[:6, :6] = torch.ones(6, 6).tril()  # the context itself ran in one step over the full prompt
        with torch.no_grad():
            logits = model(ids, None, window[None, None])[0]
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(ids, tokens)
