import json
import math

import torch

from mnemoscope.analysis.utilization import effective_rank, slot_usage, utilization, write_interference


def test_slot_usage_counts():
    N, T = 4, 3
    w = torch.zeros(2, T, 1, N)
    w[:, :, 0, 0] = 1.0  # always slot 0
    w[1, 2, 0] = torch.tensor([0.5, 0.5, 0.0, 0.0])
    u = slot_usage("w", "read_weights", w)
    assert u.untouched == [2, 3]
    assert u.mass_per_step.shape == (T, N)
    assert 1.0 < u.effective_slots < 2.0
    uniform = slot_usage("w", "write_weights", torch.full((1, T, 1, N), 1 / N))
    assert abs(uniform.effective_slots - N) < 1e-4 and uniform.untouched == []


def test_effective_rank_and_interference():
    eye = torch.eye(4)
    rank1 = torch.outer(torch.arange(1.0, 5.0), torch.ones(3))
    r = effective_rank(torch.stack([eye[:, :3] * 2, rank1]))
    assert abs(float(r[0]) - 3) < 1e-4 and abs(float(r[1]) - 1) < 1e-4
    assert math.isnan(float(effective_rank(torch.zeros(1, 2, 2))[0]))
    same = torch.ones(2, 4, 1, 3)
    res = write_interference("add", same)
    assert math.isnan(float(res.per_step[0])) and abs(res.mean - 1) < 1e-6
    orth = torch.zeros(1, 2, 2)
    orth[0, 0, 0] = orth[0, 1, 1] = 1
    assert abs(write_interference("k", orth).mean) < 1e-6


def test_real_ntm(ntm):
    from mnemoscope.models.tasks import make_task

    task = make_task("copy", min_length=10, max_length=10)
    res = utilization(ntm, task, task.sample(4, 0))
    write = next(s for s in res.slots if s.name == "memory.write_weights")
    assert write.slots == 128 and len(write.untouched) > 64  # copy of 10 writes a few slots
    matrix = next(s for s in res.states if s.name == "memory.matrix")
    assert matrix.max_rank == 20 and matrix.effective_rank_per_step.shape == (21,)
    assert {i.name for i in res.interference} == {"memory.erase", "memory.add"}
    json.dumps(res.to_dict(), allow_nan=False)


def test_every_arch(arch, make_model, task):
    m = make_model(arch, task)
    res = utilization(m, task, task.sample(2, 0))
    json.dumps(res.to_dict(), allow_nan=False)
    for s in res.states:
        assert s.norm_per_step.shape == (7,)
