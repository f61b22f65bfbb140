"""The checkpoints page names the remedies a checkpoint was trained with (a plain function)."""
from __future__ import annotations

from mnemoscope.dashboard.pages.checkpoints import table_rows, trained_remedies


def test_no_remedies_for_a_plain_checkpoint():
    assert trained_remedies({"config": {"memory_slots": 16, "bypass_dropout": 0.0}, "extra": None}) == []
    assert trained_remedies({}) == []


def test_remedies_from_the_config_and_the_stored_training_options():
    ckpt = {"config": {"bypass_dropout": 0.9, "bypass_bottleneck": 0.01, "memory_init": "constant", "masking": True},
            "extra": {"train": {"extra_loss": "ReconstructionLoss(sites=['memory.read'], ...)",
                                "curriculum": "LengthCurriculum(param='max_length')"}}}
    assert trained_remedies(ckpt) == ["bypass dropout 0.9", "bypass bottleneck 0.01", "constant memory init", "DNC fixes",
                                      "reconstruction loss", "curriculum"]


def test_slot_memory_routing_and_balancing():
    expert = {"config": {"blocks": ["slot_memory", "mlp"], "routing": "expert_choice", "balance_bias_rate": 0.01}}
    token = {"config": {"blocks": ["slot_memory", "mlp"], "routing": "token_choice", "balance_bias_rate": 0.01}}
    hybrid = {"config": {"blocks": ["memory", "attention"], "window": 4, "routing": "expert_choice"}}
    assert trained_remedies(expert) == ["slot memory, expert choice"]  # the bias cannot act on expert choice
    assert trained_remedies(token) == ["slot memory, token choice + loss-free balancing 0.01"]
    assert trained_remedies(hybrid) == ["attention window 4"]


def test_the_exported_rows_carry_the_remedies():
    rows = table_rows([{"id": "a", "config": {"bypass_dropout": 0.5}}])
    assert rows[0]["remedies"] == ["bypass dropout 0.5"]


def test_a_zoo_checkpoint_names_its_small_controller():
    ckpt = {"config": {"controller_size": 16}, "extra": {"zoo": {"remedies": {"controller_size": 16}}}}
    assert trained_remedies(ckpt) == ["small controller 16"]
    assert trained_remedies({"config": {"controller_size": 256}}) == []  # a field alone is no remedy
