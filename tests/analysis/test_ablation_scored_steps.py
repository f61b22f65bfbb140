"""Per-step ablation figures on the metric's own scale: means over the scored positions
only (issue 17, point 4: MQAR's accuracy per step peaked at 0.08 while clean accuracy was
0.62, because the per-step means counted every position, most of them unscored)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mnemoscope.analysis.ablation import AblationSpec, position_scores, run_ablations
from mnemoscope.models.checkpoints import load_checkpoint
from mnemoscope.models.tasks import make_task

ZOO = Path(__file__).resolve().parents[2] / "mnemoscope" / "zoo"


def mqar_run():
    loaded = load_checkpoint(ZOO / "mqar-deltanet.safetensors")
    task = make_task(loaded.meta.task)
    batch = task.sample(16, 3)
    spec = AblationSpec(sites=["layers.0.memory.read"], mode="resample")
    return task, batch, run_ablations(loaded.model, task, batch, [spec], seed=3)[0]


def test_mqar_accuracy_per_step_is_over_scored_positions():
    task, batch, result = mqar_run()
    scored = batch.mask.sum(0)
    assert result.scored_per_step.tolist() == scored.tolist()
    per_step = result.metric_clean_scored_per_step
    # unscored steps have no value; scored ones are accuracies among the rows scored there
    assert all(math.isnan(v) for v, n in zip(per_step.tolist(), scored.tolist()) if n == 0)
    defined = per_step[scored > 0]
    assert ((defined >= 0) & (defined <= 1)).all()
    # weighted by the positions scored at each step they give back the clean accuracy
    pooled = float((defined * scored[scored > 0]).sum() / scored.sum())
    per_row_equal = (batch.mask.sum(1) == batch.mask.sum(1)[0]).all()
    if per_row_equal:  # accuracy per sequence is then the pooled accuracy
        assert pooled == pytest.approx(result.metric_clean, abs=1e-5)
    # the old all-position means are far below the metric's scale; these are not
    assert float(result.metric_clean_per_step.max()) < 0.5 * float(defined.max())


def test_output_change_per_step_leaves_unscored_steps_out():
    _, batch, result = mqar_run()
    unscored = batch.mask.sum(0) == 0
    assert unscored.any()
    assert torch.isnan(result.flip_rate_scored_per_step[unscored]).all()
    assert torch.isnan(result.prob_change_scored_per_step[unscored]).all()
    d = result.to_dict()
    assert d["flip_rate_scored_per_step"][int(unscored.nonzero()[0])] is None  # JSON: null, not NaN
    assert len(d["metric_scored_per_step"]) == batch.mask.shape[1]


def test_bits_tasks_score_wrong_bits_per_position():
    task = make_task("copy", min_length=3, max_length=3)
    batch = task.sample(4, 0)
    logits = torch.zeros(*batch.targets.shape)  # every bit predicted 0: the wrong bits are the ones
    scores = position_scores(task, logits, batch)
    expected = batch.targets.float().sum(-1) * batch.mask
    assert torch.equal(scores * batch.mask, expected)
