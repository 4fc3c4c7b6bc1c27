"""Param groups and the LR schedule, table-driven (each row checkable by hand)."""
import math

import pytest
import torch

from sat_accel.training.optim import AnnealingLR, param_groups


def _sched(style, warmup=10, horizon=110, ratio=0.1, lr=1.0):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    return AnnealingLR(opt, max_lr=lr, horizon=horizon, warmup_steps=warmup, decay_style=style, decay_ratio=ratio)


@pytest.mark.parametrize("style, step, expected", [
    ("linear", 1, 0.1),          # warmup: 1/10 of peak
    ("linear", 10, 1.0),         # end of warmup: peak
    ("linear", 60, 0.55),        # half way through decay: 1 - 0.9 * 0.5
    ("linear", 110, 0.1),        # horizon: lr x ratio (SAT would give 0.09)
    ("linear", 500, 0.1),        # past the horizon: stays at the floor, never negative
    ("cosine", 10, 1.0),
    ("cosine", 60, 0.55),        # cos(pi/2) = 0 -> middle of [0.1, 1]
    ("cosine", 110, 0.1),        # exactly the floor at the horizon
    ("exponential", 60, math.sqrt(0.1)),  # geometric: ratio ** 0.5
    ("exponential", 110, 0.1),
    ("constant", 5, 0.5),        # constant still warms up
    ("constant", 1000, 1.0),
])
def test_schedule_table(style, step, expected):
    assert _sched(style).lr_at(step) == pytest.approx(expected)


def test_no_warmup_no_division_by_zero():
    sched = _sched("linear", warmup=0, horizon=10)
    assert sched.lr_at(0) == pytest.approx(1.0) and sched.lr_at(10) == pytest.approx(0.1)


def test_step_sets_next_iterations_lr_and_lr_scale_groups():
    w, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [w], "lr_scale": 1.0}, {"params": [b], "lr_scale": 0.5}], lr=1.0)
    sched = AnnealingLR(opt, max_lr=1.0, horizon=100, warmup_steps=10, decay_style="constant")
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.05])   # iteration 1
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.2, 0.1])    # iteration 2
    state = sched.state_dict()
    other = AnnealingLR(opt, max_lr=1.0, horizon=100, warmup_steps=10, decay_style="constant")
    other.load_state_dict(state)
    assert other.lr_at(other.last_step + 1) == pytest.approx(0.2)


def test_rewarmup_after_weights_only_resume():
    sched = _sched("constant", warmup=0, horizon=1000)
    sched.last_step = 500
    sched.start_rewarmup(100)
    assert sched.lr_at(501) == pytest.approx(0.01) and sched.lr_at(600) == pytest.approx(1.0)


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(5, 4)
        self.lin = torch.nn.Linear(4, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.head = torch.nn.Linear(4, 2)
        self.frozen = torch.nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.head.weight.lr_scale = 0.1
        self.emb.weight.no_weight_decay = True


def test_param_groups_rules():
    model = _Tiny()
    groups = param_groups(model, weight_decay=0.01)
    by_id = {id(p): (g["weight_decay"], g["lr_scale"]) for g in groups for p in g["params"]}
    assert by_id[id(model.lin.weight)] == (0.01, 1.0)
    assert by_id[id(model.lin.bias)] == (0.0, 1.0)
    assert by_id[id(model.norm.weight)] == (0.0, 1.0) and by_id[id(model.norm.bias)] == (0.0, 1.0)
    assert by_id[id(model.emb.weight)] == (0.0, 1.0)      # no_weight_decay flag
    assert by_id[id(model.head.weight)] == (0.01, 0.1)    # own lr_scale group
    assert id(model.frozen.weight) not in by_id           # frozen params are excluded
    assert groups[0]["weight_decay"] > 0                  # decayed groups first, as SAT
