"""Hugging Face models: for every supported model_type a tiny random model built by transformers, saved with
save_pretrained and imported through the command line, against transformers' own forward; sites, shapes,
causal per-timestep interventions, hooks left behind; and directories that must be refused."""
from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mnemoscope.models import Intervention, run_with_sites  # noqa: E402
from mnemoscope.models.checkpoints import inspect_checkpoint, load_checkpoint  # noqa: E402
from mnemoscope.models.hf import SUPPORTED_MODEL_TYPES, HFModel, decode_config, encode_config  # noqa: E402
from mnemoscope.models.importers.hf import import_hf_dir  # noqa: E402
from mnemoscope.cli import main  # noqa: E402

T = 9  # sequence length: longer than the Mamba-2 chunk (4) and RecurrentGemma's window (4)
STEP = 4  # where interventions land
BASE = dict(vocab_size=64, hidden_size=32, use_cache=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
ATTENTION = dict(num_attention_heads=4, num_key_value_heads=2, head_dim=8, intermediate_size=64)
# Tiny configs: vocab 64, hidden 32; hybrids get 4 layers with at least one attention layer among them.
TINY: dict[str, dict] = {
    "mamba": dict(num_hidden_layers=2, state_size=8, time_step_rank=4),
    "mamba2": dict(num_hidden_layers=2, num_heads=8, head_dim=8, n_groups=2, state_size=8, chunk_size=4,
                   time_step_rank=4),
    "falcon_mamba": dict(num_hidden_layers=2, state_size=8, intermediate_size=64, time_step_rank=4),
    "jamba": dict(num_hidden_layers=4, **ATTENTION, num_experts=4, num_experts_per_tok=2, expert_layer_period=2,
                  expert_layer_offset=1, attn_layer_period=4, attn_layer_offset=1, mamba_d_state=8, mamba_dt_rank=4),
    "bamba": dict(num_hidden_layers=4, **ATTENTION, attn_layer_indices=[1], mamba_n_heads=8, mamba_d_head=8,
                  mamba_n_groups=1, mamba_d_state=8, mamba_chunk_size=4),
    "nemotron_h": dict(num_hidden_layers=4, layers_block_type=["mamba", "moe", "attention", "mlp"], **ATTENTION,
                       ssm_state_size=8, mamba_num_heads=8, mamba_head_dim=8, n_groups=1, chunk_size=4,
                       n_routed_experts=4, moe_intermediate_size=16, moe_shared_expert_intermediate_size=16,
                       num_experts_per_tok=2),
    "granitemoehybrid": dict(num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                             shared_intermediate_size=32, num_local_experts=4, num_experts_per_tok=2,
                             layer_types=["mamba", "attention", "mamba", "mamba"], mamba_n_heads=8, mamba_d_head=8,
                             mamba_n_groups=1, mamba_d_state=8, mamba_chunk_size=4),
    "falcon_h1": dict(num_hidden_layers=2, **ATTENTION, mamba_d_ssm=64, mamba_n_heads=8, mamba_d_head=8,
                      mamba_n_groups=1, mamba_d_state=8, mamba_chunk_size=4),  # attention and SSM side by side
    "qwen3_next": dict(num_hidden_layers=4, **ATTENTION,
                       layer_types=["linear_attention", "full_attention", "linear_attention", "linear_attention"],
                       linear_key_head_dim=8, linear_value_head_dim=8, linear_num_key_heads=2, linear_num_value_heads=4,
                       num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                       shared_expert_intermediate_size=16, mlp_only_layers=[0]),
    "recurrent_gemma": dict(num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4, head_dim=8,
                            intermediate_size=64, lru_width=32, attention_window_size=4,
                            block_types=["recurrent", "attention"]),
    "minimax": dict(num_hidden_layers=4, **ATTENTION, num_local_experts=4, num_experts_per_tok=2, block_size=4,
                    layer_types=["linear_attention", "full_attention", "linear_attention", "full_attention"]),
    "lfm2": dict(num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                 block_auto_adjust_ff_dim=False, layer_types=["conv", "full_attention", "conv", "conv"]),
    "rwkv": dict(num_hidden_layers=2, attention_hidden_size=32, intermediate_size=64, context_length=64),
    "xlstm": dict(num_hidden_layers=2, num_blocks=2, embedding_dim=32, num_heads=4, chunk_size=4),
}
# The memory kind each model's layers must show (lfm2 has none: short convolutions and attention).
MEMORY_KIND = {"mamba": "ssm", "mamba2": "ssm", "falcon_mamba": "ssm", "jamba": "ssm", "bamba": "ssm",
               "nemotron_h": "ssm", "granitemoehybrid": "ssm", "falcon_h1": "ssm", "qwen3_next": "linear_attention",
               "minimax": "linear_attention", "xlstm": "linear_attention", "recurrent_gemma": "recurrent",
               "rwkv": "recurrent", "lfm2": None}
CASES = [*SUPPORTED_MODEL_TYPES, "mamba-native"]  # a Mamba-1 directory imports as the native `mamba` by default


def test_every_supported_type_has_a_tiny_config():
    assert set(TINY) == set(SUPPORTED_MODEL_TYPES) == set(MEMORY_KIND)


def save_tiny(model_type: str, folder: Path, seed: int = 0, **save) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **BASE, **TINY[model_type]))
    with torch.no_grad():  # off the init, where a zero-initialised projection would hide an intervention
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(folder, **save)
    return folder


def reference_logits(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True).eval()  # transformers' default attention
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


@pytest.fixture(scope="module", params=CASES)
def imported(request, tmp_path_factory):
    """(case, model loaded from the checkpoint the CLI wrote, the HF folder, input ids, transformers' logits)."""
    case = request.param
    model_type = case.removesuffix("-native")
    root = tmp_path_factory.mktemp(case)
    folder = save_tiny(model_type, root / "hf")
    out = root / "model.safetensors"
    wrap = ["--wrap"] if model_type == "mamba" and case == "mamba" else []
    assert main(["import", "hf", str(folder), "-o", str(out), "--task", "mqar",
                 "--task-param", "vocab_size=64", *wrap]) == 0
    ids = torch.randint(0, 64, (2, T), generator=torch.Generator().manual_seed(1))
    return case, load_checkpoint(out).model, folder, ids, reference_logits(folder, ids)


def expected_shape(spec) -> tuple:
    return (2, T, *(T if s is None else s for s in spec.shape))


def test_forward_with_every_site_recorded_equals_transformers(imported):
    case, model, _, ids, ref = imported
    assert model.arch == ("mamba" if case == "mamba-native" else "hf")
    with torch.no_grad():
        plain = model(ids)
        logits, trace = run_with_sites(model, ids, record="*")
    assert logits.shape == ref.shape == (2, T, 64)
    assert (plain - ref).abs().max() < 1e-5
    assert (logits - ref).abs().max() < 1e-5
    assert set(trace.names()) == {n for n, s in model.site_specs().items() if not s.on_request}


def test_sites_record_with_declared_shapes(imported):
    case, model, _, ids, _ = imported
    specs = model.site_specs()
    names = [n for n, s in specs.items() if not s.on_request]
    with torch.no_grad():
        _, trace = run_with_sites(model, ids, record=names)
    for name in names:
        assert trace[name].shape == expected_shape(specs[name]), name
    if model.arch != "hf":
        return
    kind = MEMORY_KIND[case]
    n_layers = len(model.layers)
    assert all(f"layers.{i}.residual" in specs for i in range(n_layers))
    memory_outs = [n for n, s in specs.items() if s.memory]
    assert all(n.endswith(f".{kind}.out") and specs[n].kind == "read" for n in memory_outs)
    assert bool(memory_outs) == (kind is not None)
    competitors = [n for n in specs if n.endswith((".attention.out", ".conv.out", ".mlp.out", ".moe.out", ".pattern"))]
    assert all(not specs[n].memory for n in competitors)


def test_intervention_at_step_t_changes_outputs_only_from_t_on(imported):
    case, model, _, ids, _ = imported
    specs = model.site_specs()
    memory = [n for n, s in specs.items() if s.memory and not s.on_request]
    site = (memory or [n for n in specs if n.endswith(".conv.out")])[0]
    replacement = torch.randn(expected_shape(specs[site]), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        clean = model(ids)
        patched, trace = run_with_sites(model, ids, record=[site],
                                        interventions=[Intervention(site, replacement, steps=[STEP])])
    change = (patched - clean).abs().amax(dim=(0, 2))  # per timestep
    assert change[:STEP].max() < 1e-6, (site, change)  # MoE batching may reorder sums: float noise only
    assert change[STEP] > 1e-4, (site, change)
    assert torch.equal(trace[site][:, STEP], replacement[:, STEP])


def test_no_hooks_stay_attached(imported):
    _, model, _, ids, _ = imported
    with torch.no_grad():
        run_with_sites(model, ids, record="*", interventions=[Intervention(next(iter(model.site_specs())), 0.0)])
    for name, module in model.named_modules():
        assert not module._forward_hooks and not module._forward_pre_hooks, name
        assert "_mnemoscope_pattern_site" not in module.__dict__, name


def test_checkpoint_holds_arch_hf_config_and_task(imported, tmp_path):
    case, model, folder, ids, _ = imported
    meta = inspect_checkpoint(Path(folder).parent / "model.safetensors")
    assert meta.task["name"] == "mqar" and meta.task["params"]["vocab_size"] == 64
    assert meta.extra["imported_from"] == "hf"
    if case == "mamba-native":
        assert meta.arch == "mamba" and meta.extra["hf_config"]["model_type"] == "mamba"
        return
    assert meta.arch == "hf" and meta.config["hf_config"]["model_type"] == case
    direct = import_hf_dir(folder, wrap_mamba=True)  # the Python API: the same model without a file
    with torch.no_grad():
        assert torch.equal(direct(ids), model(ids))


@pytest.mark.parametrize("model_type", ["jamba", "recurrent_gemma"])
def test_attention_pattern_is_causal_and_intervenable(model_type, tmp_path):
    model = import_hf_dir(save_tiny(model_type, tmp_path / "hf"))
    ids = torch.randint(0, 64, (2, T), generator=torch.Generator().manual_seed(1))
    site = next(n for n in model.site_specs() if n.endswith("attention.pattern"))
    with torch.no_grad():
        clean, trace = run_with_sites(model, ids, record=[site])
        p = trace[site]  # [B, T, heads, key]
        assert torch.allclose(p.sum(-1), torch.ones(()), atol=1e-5)
        assert p.permute(0, 2, 1, 3).triu(1).abs().max() == 0  # causal
        if model_type == "recurrent_gemma":  # a 4-token window: nothing further back than 3 steps
            assert p.permute(0, 2, 1, 3).tril(-4).abs().max() == 0
        uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
        patched, _ = run_with_sites(model, ids, interventions=[
            Intervention(site, uniform[None, :, None, :].expand(2, T, p.shape[2], T), steps=[STEP])])
    change = (patched - clean).abs().amax(dim=(0, 2))
    assert change[:STEP].max() < 1e-6 and change[STEP] > 1e-5


def test_component_groups_cover_memory_and_attention(tmp_path):
    model = import_hf_dir(save_tiny("jamba", tmp_path / "hf"))
    groups = model.component_groups()
    names = [n for n, _ in model.named_parameters()]
    for group in ("memory", "attention", "mlp", "moe", "embedding", "output"):
        assert any(n.startswith(p + ".") for p in groups[group] for n in names), group
    assert groups["memory"] == ["hf.model.layers.0.mamba", "hf.model.layers.2.mamba", "hf.model.layers.3.mamba"]


def test_sharded_weights_and_non_finite_config_values(tmp_path):
    folder = save_tiny("mamba2", tmp_path / "hf", max_shard_size="20KB")
    assert (folder / "model.safetensors.index.json").exists() and not (folder / "model.safetensors").exists()
    config = json.loads((folder / "config.json").read_text())
    config["time_step_limit"] = [0.0, float("inf")]  # written as Infinity, which strict JSON lacks
    (folder / "config.json").write_text(json.dumps(config))
    out = tmp_path / "m.safetensors"
    assert main(["import", "hf", str(folder), "-o", str(out)]) == 0
    loaded = load_checkpoint(out).model
    assert loaded.hf.config.time_step_limit[1] == float("inf")
    ids = torch.randint(0, 64, (1, T))
    with torch.no_grad():
        assert (loaded(ids) - reference_logits(folder, ids)).abs().max() < 1e-5
    assert decode_config(encode_config({"a": [float("-inf"), 1.5]})) == {"a": [float("-inf"), 1.5]}


# -- refusals: each names the problem, and nothing from the directory runs ------------------------------------
CANARY = "mnemoscope_canary"


class RunsCode:
    """Unpickling this creates a file: the proof that a pickle was (not) loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def good_folder(tmp_path) -> Path:
    return save_tiny("rwkv", tmp_path / "hf")


def refused(folder: Path, tmp_path: Path, capsys) -> str:
    out = tmp_path / "never.safetensors"
    assert main(["import", "hf", str(folder), "-o", str(out)]) == 2
    assert not out.exists()
    with pytest.raises(ValueError) as exc:
        import_hf_dir(folder)
    err = capsys.readouterr().err
    assert str(exc.value).splitlines()[0] in err
    return str(exc.value)


def test_pickled_weights_only_are_refused_with_the_conversion(good_folder, tmp_path, capsys):
    marker = tmp_path / "unpickled"
    (good_folder / "model.safetensors").unlink()
    with open(good_folder / "pytorch_model.bin", "wb") as f:
        pickle.dump(RunsCode(marker), f)
    message = refused(good_folder, tmp_path, capsys)
    assert "pytorch_model.bin" in message and "never unpickles" in message
    assert "save_pretrained" in message and "safe_serialization=True" in message
    assert not marker.exists()


def test_unknown_model_type_is_refused(good_folder, tmp_path, capsys):
    config = json.loads((good_folder / "config.json").read_text())
    config["model_type"] = "llama"
    (good_folder / "config.json").write_text(json.dumps(config))
    message = refused(good_folder, tmp_path, capsys)
    assert "model_type 'llama' is not supported" in message and "mamba2" in message


def test_remote_code_is_refused_and_never_imported(good_folder, tmp_path, capsys):
    marker = tmp_path / "imported"
    (good_folder / f"{CANARY}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    config = json.loads((good_folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": f"{CANARY}.Evil", "AutoConfig": f"{CANARY}.EvilConfig"}
    (good_folder / "config.json").write_text(json.dumps(config))
    message = refused(good_folder, tmp_path, capsys)
    assert "auto_map" in message and "remote code" in message
    assert not marker.exists()
    # a checkpoint whose stored config asks for remote code is refused on load as well
    with pytest.raises(ValueError, match="auto_map"):
        HFModel(HFModel.Config(config))


def test_weights_that_do_not_match_the_config_are_named(good_folder, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    tensors = load_file(good_folder / "model.safetensors")
    dropped = "rwkv.blocks.1.attention.key.weight"
    del tensors[dropped]
    tensors["rwkv.extra.weight"] = torch.zeros(2)
    save_file(tensors, good_folder / "model.safetensors", metadata={"format": "pt"})
    message = refused(good_folder, tmp_path, capsys)
    assert dropped in message and "rwkv.extra.weight" in message


def test_shard_index_cannot_point_outside_the_folder(good_folder, tmp_path, capsys):
    shutil.copy(good_folder / "model.safetensors", tmp_path / "outside.safetensors")
    index = {"metadata": {}, "weight_map": {"rwkv.embeddings.weight": "../outside.safetensors"}}
    (good_folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert "same folder" in refused(good_folder, tmp_path, capsys)


def test_one_hot_soft_tokens_equal_token_ids(tmp_path):
    model = import_hf_dir(save_tiny("qwen3_next", tmp_path / "hf"))
    ids = torch.randint(0, 64, (2, T), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (model(torch.nn.functional.one_hot(ids, 64).float()) - model(ids)).abs().max() < 1e-5
    with pytest.raises(ValueError, match="soft tokens"):
        model(torch.randn(2, T, 8))
