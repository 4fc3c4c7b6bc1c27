"""--split parsing (table-driven, SAT's examples) and disjoint block splits."""
import pytest

from sat_accel.data.splits import parse_split, should_split, split_dataset, split_sizes
from sat_accel.errors import ConfigError, DataError

# (flag value, has --valid-data, has --test-data, expected shares) — SAT's verified examples
PARSE_TABLE = [
    ("95,5,5", False, False, [0.905, 0.048, 0.048]),   # 95/105, 5/105, 5/105
    ("1000,1,1", False, False, [0.998, 0.001, 0.001]),  # 1000/1002
    ("1", False, False, [1.0, 0.0, 0.0]),               # sum 1: nothing appended
    ("0.8,0.1", False, False, [0.8, 0.1, 0.1]),         # remainder 0.1 appended
    ("0.5", False, False, [0.5, 0.5, 0.0]),             # remainder 0.5 appended, then pad
    ("98/1/1", False, False, [0.98, 0.01, 0.01]),       # '/' separator
    ("1,2,3,4", False, False, [1 / 6, 2 / 6, 3 / 6]),   # truncated to 3
    ("95,5,5", True, False, [0.95, 0.0, 0.05]),         # --valid-data zeroes the valid share
    ("95,5,5", True, True, [1.0, 0.0, 0.0]),            # both given: train only
]


@pytest.mark.parametrize("text,valid,test,expected", PARSE_TABLE)
def test_parse_split(text, valid, test, expected):
    assert parse_split(text, valid, test) == pytest.approx(expected, abs=5e-4)


@pytest.mark.parametrize("text", ["a,b", "1,-1,1", "0,0,0", "nan,1", "1,,1"])
def test_bad_split_is_a_config_error(text):
    with pytest.raises(ConfigError, match="--split"):
        parse_split(text)


def test_split_that_only_had_eval_shares_left_fails():
    with pytest.raises(ConfigError, match="no non-zero share"):
        parse_split("0,1,1", has_valid_data=True, has_test_data=True)


def test_should_split():
    assert should_split([0.9, 0.1, 0.0]) and not should_split([1.0, 0.0, 0.0])


# (block, shares, sizes): sizes sum to the block; every non-zero share gets >= 1
SIZE_TABLE = [
    (10000, [95, 5, 5], [9048, 476, 476]),  # 9047.6 / 476.19 / 476.19, largest remainder
    (10000, [1000, 1, 1], [9980, 10, 10]),  # 9980.04 / 9.98 / 9.98
    (100, [1000, 1, 1], [98, 1, 1]),        # 0.1 rounds to 0 -> forced to 1 (SAT overlaps here)
    (3, [1000, 1, 1], [1, 1, 1]),           # the smallest dataset that can be split three ways
    (7, [1, 0, 0], [7, 0, 0]),
]


@pytest.mark.parametrize("block,shares,sizes", SIZE_TABLE)
def test_split_sizes(block, shares, sizes):
    assert split_sizes(block, shares) == sizes


def test_too_small_to_split_names_the_size():
    with pytest.raises(DataError, match="2 example"):
        split_sizes(2, [0.98, 0.01, 0.01])


@pytest.mark.parametrize("n,block", [(1000, 100), (1003, 100), (50, 10000), (3, 10000), (12345, 999)])
def test_split_parts_are_disjoint_and_cover_the_dataset(n, block):
    data = list(range(n))
    parts = split_dataset(data, parse_split("95,5,5"), block, seed=1234)
    items = [[part[i] for i in range(len(part))] for part in parts]
    assert all(len(part) >= 1 for part in items)
    flat = [x for part in items for x in part]
    assert sorted(flat) == data  # disjoint and nothing lost
    share = len(items[0]) / n
    assert abs(share - 95 / 105) < max(0.02, 2 / n)


def test_split_depends_on_seed_and_zero_share_is_none():
    data = list(range(100))
    a = split_dataset(data, [0.5, 0.5, 0.0], 100, seed=1)
    b = split_dataset(data, [0.5, 0.5, 0.0], 100, seed=2)
    assert a[2] is None
    assert [a[1][i] for i in range(50)] != [b[1][i] for i in range(50)]


def test_split_index_errors():
    part = split_dataset(list(range(10)), [0.5, 0.5, 0], 10, seed=0)[0]
    assert part[-1] == part[len(part) - 1]
    with pytest.raises(IndexError):
        part[len(part)]
