"""--group-by-length: length-sorted windows over the index-free stream + padding to the batch's longest.

What must hold: the same examples once per epoch (only the order inside windows changes), a pure function
of (seed, n, window, global batch), exact resume from consumed_samples, 1 process x 2B == 2 x B (a real
2-process launch), and the loss of a padded batch equals the loss without padding.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset

import tiny_task
from launch import assert_same_training, run_tiny
from sat_accel import get_args, training_main
from sat_accel.data.collate import PadToLongest
from sat_accel.data.grouping import LengthGroupedStream, example_lengths, padding_efficiency as efficiency
from sat_accel.data.mixture import MixtureStream
from sat_accel.data.sampler import ShuffledStream, StreamBatchSampler
from sat_accel.data.splits import split_dataset
from sat_accel.errors import ConfigError, DataError, HookError

N = 1000
LENGTHS = np.random.default_rng(0).integers(5, 200, N)


def grouped(global_batch=32, window=5, seed=11, base_seed=7):
    return LengthGroupedStream(ShuffledStream(N, base_seed), LENGTHS, window, global_batch, seed)


def batches(stream, batch_size, rank=0, world=1, count=40, start=0):
    sampler = StreamBatchSampler(stream, batch_size, rank, world, consumed_samples=start)
    iterator = iter(sampler)
    return [next(iterator) for _ in range(count)]


def padding_efficiency(batch_list, multiple=8):
    real = sum(int(LENGTHS[b].sum()) for b in batch_list)
    padded = sum(len(b) * (-(-int(LENGTHS[b].max()) // multiple) * multiple) for b in batch_list)
    return real / padded


# ---------------------------------------------------------------- the stream
def test_every_example_once_per_epoch_and_only_reordered_inside_windows():
    stream, base = grouped(), ShuffledStream(N, 7)
    positions = np.arange(3 * N + 17)
    got, want = stream.indices(positions), base.indices(positions)
    for epoch in range(3):
        assert sorted(got[epoch * N:(epoch + 1) * N]) == list(range(N))
    for epoch in range(3):  # the same examples in every window as the plain stream has there
        for window in range(-(-N // (5 * 32))):
            a, b = stream.window_bounds(epoch, window)
            assert sorted(got[a:b]) == sorted(want[a:b])
    assert not np.array_equal(got, want)


def test_windows_never_cross_an_epoch_boundary():
    stream = grouped(global_batch=48, window=7)  # 336 does not divide 1000
    assert stream.window_bounds(0, 2) == (672, 1000)
    assert stream.window_bounds(1, 0) == (1000, 1336)


def test_order_is_a_pure_function_of_seed_n_window_and_global_batch():
    positions = np.arange(2500)
    assert np.array_equal(grouped().indices(positions), grouped().indices(positions))
    assert not np.array_equal(grouped().indices(positions), grouped(seed=12).indices(positions))
    assert not np.array_equal(grouped().indices(positions), grouped(window=6).indices(positions))
    # queried in any chunking and order: same answer
    stream = grouped()
    pieces = np.concatenate([stream.indices(positions[i:i + 77]) for i in range(0, 2500, 77)][::-1])
    assert np.array_equal(np.sort(pieces), np.sort(grouped().indices(positions)))
    assert np.array_equal(stream.indices(positions[::-1]), grouped().indices(positions)[::-1])


def test_grouped_batches_are_homogeneous():
    plain = batches(ShuffledStream(N, 7), 16, count=60)
    small_window = batches(grouped(global_batch=16, window=5), 16, count=60)
    default_window = batches(grouped(global_batch=16, window=50), 16, count=60)
    assert padding_efficiency(default_window) > 0.9 > padding_efficiency(small_window) > 0.8 > 0.7 > \
        padding_efficiency(plain)


def test_one_rank_double_batch_equals_two_ranks():
    stream = grouped(global_batch=32)
    one = batches(stream, 32, count=50)
    rank0, rank1 = batches(grouped(), 16, 0, 2, count=50), batches(grouped(), 16, 1, 2, count=50)
    assert one == [a + b for a, b in zip(rank0, rank1)]


def test_resume_from_consumed_samples_is_exact():
    full = batches(grouped(), 16, 1, 2, count=80)
    resumed = batches(grouped(), 16, 1, 2, count=40, start=40 * 32)
    assert resumed == full[40:]


def test_wraps_a_weighted_mixture():
    mixture = MixtureStream([600, 400], [1, 2], seed=3)  # mixture epoch = 600 + 800 positions
    stream = LengthGroupedStream(mixture, LENGTHS, 4, 16, 5)
    got, want = stream.indices(np.arange(1400)), mixture.indices(np.arange(1400))
    assert sorted(got) == sorted(want)


# ---------------------------------------------------------------- lengths
def hf_rows(n=40):
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        k = int(rng.integers(2, 30))
        rows.append({"input_ids": list(range(1, k + 1)) + [0] * (32 - k), "attention_mask": [1] * k + [0] * (32 - k),
                     "label": i % 2})
    return rows


def test_lengths_from_hugging_face_columns_through_splits_and_concatenation():
    from datasets import Dataset

    rows = hf_rows()
    want = np.array([sum(r["attention_mask"]) for r in rows])
    ds = Dataset.from_list(rows).with_format("torch")
    assert np.array_equal(example_lengths(ds), want)
    train, _, _ = split_dataset(ds, [0.8, 0.2, 0.0], 10, 3)
    concat = ConcatDataset([train, ds])
    expected = np.concatenate([[want[train.source_index(i)] for i in range(len(train))], want])
    assert np.array_equal(example_lengths(concat), expected)
    no_mask = Dataset.from_list([{"input_ids": r["input_ids"][:n]} for r, n in zip(rows, want)])
    assert np.array_equal(example_lengths(no_mask), want)
    with_length = Dataset.from_list([{"length": 5, "input_ids": [1]}] * 3)
    assert example_lengths(with_length).tolist() == [5, 5, 5]


def test_lengths_from_examples_and_from_a_user_function():
    data = tiny_task.TinyTokens(30)
    assert example_lengths(data).tolist() == [len(ids) for ids in data.ids]
    assert example_lengths(data, lambda ex: 2 * len(ex["input_ids"])).tolist() == [2 * len(i) for i in data.ids]


def test_bad_lengths_say_what_to_do():
    with pytest.raises(DataError, match="length_function"):
        example_lengths(tiny_task.TinyDataset(8))
    with pytest.raises(HookError, match="non-negative int"):
        example_lengths(tiny_task.TinyTokens(4), lambda ex: "long")


# ---------------------------------------------------------------- the collator
def test_collator_pads_to_the_longest_rounded_to_eight():
    batch = PadToLongest(pad_token_id=3)([{"input_ids": [5] * 9, "attention_mask": [1] * 9, "labels": [1] * 9,
                                           "x": torch.ones(4), "label": 1},
                                          {"input_ids": [6] * 2, "attention_mask": [1] * 2, "labels": [2] * 2,
                                           "x": torch.zeros(4), "label": 0}])
    assert batch["input_ids"].shape == (2, 16) and batch["input_ids"][1, 2:].eq(3).all()
    assert batch["attention_mask"].sum().item() == 11
    assert batch["labels"][1, 2:].eq(-100).all()
    assert batch["x"].shape == (2, 4) and batch["label"].tolist() == [1, 0]


def test_collator_cuts_stored_padding_back():
    rows = hf_rows(4)
    batch = PadToLongest()(rows)
    longest = max(sum(r["attention_mask"]) for r in rows)
    assert batch["input_ids"].shape[1] == min(32, -(-longest // 8) * 8)
    assert batch["attention_mask"].sum().item() == sum(sum(r["attention_mask"]) for r in rows)


def test_collator_refuses_what_it_cannot_pad():
    with pytest.raises(DataError, match="dict examples"):
        PadToLongest()([(1, 2)])


def test_padding_does_not_change_the_loss():
    torch.manual_seed(0)
    model = tiny_task.TinyTokenModel().eval().requires_grad_(False)
    examples = [tiny_task.TinyTokens(16)[i] for i in range(16)]
    batch = PadToLongest()(examples)
    padded = F.cross_entropy(model(batch["input_ids"], batch["attention_mask"]), batch["label"], reduction="none")
    for row, example in zip(padded, examples):
        ids = torch.tensor([example["input_ids"]])
        alone = F.cross_entropy(model(ids, torch.ones_like(ids)), torch.tensor([example["label"]]))
        assert abs(row.item() - alone.item()) < 1e-5


# ---------------------------------------------------------------- through training_main
TOKENS = ["--train-data", "tokens:200", "--split", "1", "--log-interval", "1", "--lr", "3e-3", "--warmup", "0",
          "--num-workers", "0", "--seed", "7", "--adam-eps", "1e-6", "--no-progress"]


def train_tokens(tmp_path, argv, collate_fn=None):
    tiny_task.SEEN_INDICES.clear()
    args = get_args(TOKENS + ["--summary-dir", str(tmp_path)] + argv)
    model = training_main(args, tiny_task.TinyTokenModel, tiny_task.forward_step_tokens,
                          tiny_task.create_token_dataset, collate_fn=collate_fn)
    return list(tiny_task.SEEN_INDICES), model


def test_an_epoch_sees_the_same_examples_with_less_padding(tmp_path, sat_log):
    plain, _ = train_tokens(tmp_path / "a", ["--train-iters", "25", "--batch-size", "8"],  # 200 = one epoch
                            collate_fn=PadToLongest())
    grouped_, _ = train_tokens(tmp_path / "b", ["--train-iters", "25", "--batch-size", "8", "--group-by-length",
                                                "--group-by-length-window", "5"])
    assert sorted(i for b in plain for i in b) == sorted(i for b in grouped_ for i in b) == list(range(200))
    assert plain != grouped_
    data = tiny_task.TinyTokens(200)
    longest = [max(len(data.ids[i]) for i in b) for b in grouped_]
    assert np.mean(longest) < 0.8 * np.mean([max(len(data.ids[i]) for i in b) for b in plain])
    assert "--group-by-length: 200 examples" in sat_log.text
    assert "saves little padding" not in sat_log.text


def test_the_padding_estimate_matches_the_batches_and_warns_when_grouping_saves_little(tmp_path, sat_log):
    plain, by_length = ShuffledStream(N, 7), grouped(global_batch=32, window=5)
    for stream in (plain, by_length):  # what the log reports: the first window, in per-rank batches
        assert efficiency(stream, LENGTHS, 16, 160) == pytest.approx(padding_efficiency(
            batches(stream, 16, count=10), multiple=1))
    assert efficiency(by_length, LENGTHS, 16, 160) > efficiency(plain, LENGTHS, 16, 160) + 0.3
    args = get_args(TOKENS + ["--summary-dir", str(tmp_path), "--train-iters", "1", "--batch-size", "8",
                              "--group-by-length"])
    training_main(args, tiny_task.TinyTokenModel, tiny_task.forward_step_tokens, tiny_task.create_token_dataset,
                  length_function=lambda example: 12)  # all alike: nothing to group
    assert "saves little padding on this data (real tokens 100.0% of the padded batch ungrouped" in sat_log.text


def test_grouped_resume_is_exact(tmp_path):
    argv = ["--batch-size", "8", "--group-by-length", "--group-by-length-window", "3", "--train-iters", "12"]
    full, model = train_tokens(tmp_path / "full", argv)
    train_tokens(tmp_path / "first", argv + ["--save", str(tmp_path / "ck"), "--exit-interval", "5"])
    (run,) = (tmp_path / "ck").iterdir()
    rest, resumed = train_tokens(tmp_path / "rest", argv + ["--load", str(run)])
    assert rest == full[5:]
    for key, value in model.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


class Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        return iter(tiny_task.TinyTokens(8))


def test_iterable_data_is_refused(tmp_path):
    args = get_args(TOKENS + ["--train-iters", "2", "--group-by-length", "--iterable-dataset",
                              "--summary-dir", str(tmp_path)])
    with pytest.raises(ConfigError, match="map-style"):
        training_main(args, tiny_task.TinyTokenModel, tiny_task.forward_step_tokens, lambda path, args: Stream())


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_processes_equal_one_process_double_batch(tmp_path):
    argv = TOKENS + ["--train-iters", "8", "--group-by-length", "--group-by-length-window", "4"]
    script = tiny_task.__file__.replace("tiny_task.py", "scripts/train_tokens.py")
    one = run_tiny(tmp_path / "one", argv + ["--batch-size", "8"], script=script)
    two = run_tiny(tmp_path / "two", argv + ["--batch-size", "4"], nproc=2, launcher="torchrun", script=script)
    assert_same_training(one[0], two[0], one[1], two[1])
