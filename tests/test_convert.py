"""Checkpoint formats against transformers: Hugging Face folders (single file, sharded, tied, rope-scaled), save_hf,
Meta's params.json + consolidated.00.pth, config translation, and the errors a bad checkpoint gets.

The oracle is transformers' LlamaForCausalLM on the same weights: logits within 1e-5 in float32 and the same
greedy tokens. Models are tiny and random (seeded), so every test runs in about a second.
"""

import copy
import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from llama3 import Llama3, ModelArgs
from llama3.config import validate_rope_scaling
from llama3.convert import args_from_hf_config, args_from_meta_params, hf_config_from_args
from tests.conftest import tiny_args

transformers = pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402

GREEDY_STEPS = 30

# A Llama-3.2-1B-shaped model scaled down: tied embeddings, GQA with 4 query heads per K/V head, rope_theta 500000
# and Llama 3.2's rope scaling (factor 32), with original_max_position_embeddings 16 instead of 8192 so that the
# scaled frequencies matter at the positions tested here.
LLAMA32_SHAPE = dict(vocab_size=256, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                     num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5,
                     rope_theta=500000.0, tie_word_embeddings=True,
                     rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                   "high_freq_factor": 4.0, "original_max_position_embeddings": 16})
# Untied GQA with an explicit head_dim that is not hidden_size // heads (32 != 64 // 4).
UNTIED_GQA = dict(vocab_size=200, hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=32, max_position_embeddings=96, rope_theta=10000.0,
                  tie_word_embeddings=False)


def hf_llama(seed: int = 0, **config) -> LlamaForCausalLM:
    """A random transformers Llama in float32. initializer_range 0.2 spreads the logits, so that greedy argmaxes
    are not decided by rounding noise."""
    torch.manual_seed(seed)
    config = copy.deepcopy(config)  # LlamaConfig writes rope_theta into the rope_scaling dict it is given
    cfg = LlamaConfig(**config, initializer_range=0.2, bos_token_id=None, eos_token_id=None, pad_token_id=None,
                      attn_implementation="sdpa")
    return LlamaForCausalLM(cfg).eval()


def ids(seed: int, vocab: int, length: int, batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=generator)


def assert_same_as_hf(ours: Llama3, hf: LlamaForCausalLM, length: int = 48) -> None:
    """Logits within 1e-5 on `length` positions, and the same greedy tokens for 30 steps."""
    vocab = hf.config.vocab_size
    tokens = ids(1, vocab, length)
    with torch.no_grad():
        expected = hf(tokens).logits
        got = ours(tokens).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1.3e-6)

    prompt = ids(2, vocab, 8, batch=1)
    with torch.no_grad():
        want = hf.generate(prompt, do_sample=False, max_new_tokens=GREEDY_STEPS, min_new_tokens=GREEDY_STEPS)
    got_ids = ours.generate_kv(prompt, temperature=0, max_new_tokens=GREEDY_STEPS)
    assert want.shape == (1, 8 + GREEDY_STEPS)
    assert torch.equal(got_ids, want)


# ------------------------------------------------------------------------------------ Hugging Face folders
@pytest.mark.parametrize("config,shard_size", [
    (LLAMA32_SHAPE, None),
    (UNTIED_GQA, None),
    (UNTIED_GQA, "40KB"),  # several shards and a model.safetensors.index.json
], ids=["llama32-shape-tied-scaled", "untied-gqa-head-dim", "sharded"])
def test_hf_folder_loads_with_transformers_logits(tmp_path, config, shard_size):
    hf = hf_llama(**config)
    kwargs = {} if shard_size is None else {"max_shard_size": shard_size}
    hf.save_pretrained(tmp_path, **kwargs)
    files = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    if shard_size is None:
        assert files == ["model.safetensors"]
    else:
        assert (tmp_path / "model.safetensors.index.json").is_file() and len(files) > 2

    ours = Llama3.from_hf(tmp_path)
    assert ours.args.tie_embeddings == config["tie_word_embeddings"]
    assert ours.args.head_dim == config.get("head_dim", config["hidden_size"] // config["num_attention_heads"])
    if config["tie_word_embeddings"]:
        assert ours.output.weight is ours.tok_embeddings.weight
    assert_same_as_hf(ours, hf)


def test_rope_scaling_is_read_and_matters(tmp_path):
    """The Llama-3.2-shaped folder loads with factor 32; the same weights without scaling give other logits, so the
    parity test above would catch a loader that dropped rope_scaling."""
    hf = hf_llama(**LLAMA32_SHAPE)
    hf.save_pretrained(tmp_path)
    ours = Llama3.from_hf(tmp_path)
    assert ours.args.rope_scaling == {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
    assert ours.args.rope_theta == 500000.0
    unscaled = Llama3.from_hf(tmp_path, rope_scaling=None)
    tokens = ids(3, 256, 48)
    with torch.no_grad():
        assert (ours(tokens).logits - unscaled(tokens).logits).abs().max() > 1e-3


def test_hf_folder_dtype_cast_on_load(tmp_path):
    hf = hf_llama(**UNTIED_GQA).to(torch.bfloat16)
    hf.save_pretrained(tmp_path)
    assert Llama3.from_hf(tmp_path).tok_embeddings.weight.dtype == torch.bfloat16  # the checkpoint's dtype
    ours = Llama3.from_hf(tmp_path, dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in ours.parameters())
    assert torch.equal(ours.tok_embeddings.weight, hf.model.embed_tokens.weight.float())


# ------------------------------------------------------------------------------------------------- save_hf
@pytest.mark.parametrize("tie,shard_size", [(True, None), (False, "30KB")], ids=["tied", "untied-sharded"])
def test_save_hf_loads_in_transformers(tmp_path, tie, shard_size):
    torch.manual_seed(0)
    args = tiny_args(tie_embeddings=tie, rope_scaling={"factor": 8.0, "low_freq_factor": 1.0,
                                                        "high_freq_factor": 4.0,
                                                        "original_max_position_embeddings": 16})
    ours = Llama3(args).eval()
    kwargs = {} if shard_size is None else {"max_shard_size": shard_size}
    ours.save_hf(tmp_path, **kwargs)
    assert (tmp_path / "model.safetensors.index.json").is_file() == (shard_size is not None)
    if tie:
        assert "lm_head.weight" not in load_file(tmp_path / "model.safetensors")

    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    tokens = ids(4, args.vocab_size, 40)
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens).logits, ours(tokens).logits, atol=1e-5, rtol=1.3e-6)

    back = Llama3.from_hf(tmp_path)  # and the round trip is exact (the FFN size comes back explicit)
    assert back.args == dataclasses.replace(args, multiple_of=256, ffn_hidden_dim=args.hidden_dim)
    for name, tensor in ours.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name


def test_save_hf_replaces_an_earlier_save(tmp_path):
    """A sharded save followed by a single-file save in the same folder leaves no stale shards or index behind
    (transformers would otherwise pick the wrong files)."""
    torch.manual_seed(0)
    Llama3(tiny_args()).save_hf(tmp_path, max_shard_size="30KB")
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 1
    torch.manual_seed(1)
    second = Llama3(tiny_args()).eval()
    second.save_hf(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    back = Llama3.from_hf(tmp_path)
    assert torch.equal(back.layers[0].attention.wq.weight, second.layers[0].attention.wq.weight)


# ----------------------------------------------------------------------------------------------- Meta format
def meta_from_hf_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Hugging Face q/k rows back to Meta's order, written out index by index: within each head, HF row j < D/2 is
    Meta row 2j (first of a pair) and HF row D/2 + j is Meta row 2j + 1."""
    head_dim = w.shape[0] // n_heads
    out = torch.empty_like(w)
    for h in range(n_heads):
        for j in range(head_dim // 2):
            out[h * head_dim + 2 * j] = w[h * head_dim + j]
            out[h * head_dim + 2 * j + 1] = w[h * head_dim + head_dim // 2 + j]
    return out


def write_meta_folder(folder, hf: LlamaForCausalLM, params: dict, keep_output: bool = True) -> None:
    """Write ``hf``'s weights in Meta's layout: params.json + consolidated.00.pth with Meta's key names."""
    cfg = hf.config
    hf_state = hf.state_dict()
    state = {"tok_embeddings.weight": hf_state["model.embed_tokens.weight"],
             "norm.weight": hf_state["model.norm.weight"]}
    if keep_output:
        state["output.weight"] = hf_state["lm_head.weight"]
    meta_names = {"self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk",
                  "self_attn.v_proj": "attention.wv", "self_attn.o_proj": "attention.wo",
                  "mlp.gate_proj": "feed_forward.w1", "mlp.down_proj": "feed_forward.w2",
                  "mlp.up_proj": "feed_forward.w3", "input_layernorm": "attention_norm",
                  "post_attention_layernorm": "ffn_norm"}
    for i in range(cfg.num_hidden_layers):
        for hf_name, meta_name in meta_names.items():
            w = hf_state[f"model.layers.{i}.{hf_name}.weight"]
            if hf_name == "self_attn.q_proj":
                w = meta_from_hf_rows(w, cfg.num_attention_heads)
            elif hf_name == "self_attn.k_proj":
                w = meta_from_hf_rows(w, cfg.num_key_value_heads)
            state[f"layers.{i}.{meta_name}.weight"] = w.clone()
    folder.mkdir(exist_ok=True)
    (folder / "params.json").write_text(json.dumps(params))
    torch.save(state, folder / "consolidated.00.pth")


# Meta's FFN rule for dim 64, multiple_of 32, ffn_dim_multiplier 1.5: int(2 * 4 * 64 / 3) = 170, int(1.5 * 170) =
# 255, rounded up to a multiple of 32 = 256. The transformers twin states it as intermediate_size=256.
META_PARAMS = {"dim": 64, "n_layers": 2, "n_heads": 8, "n_kv_heads": 2, "vocab_size": 256, "multiple_of": 32,
               "ffn_dim_multiplier": 1.5, "norm_eps": 1e-5, "rope_theta": 500000.0, "use_scaled_rope": True}


@pytest.mark.parametrize("tied", [True, False], ids=["llama32-tied", "untied"])
def test_from_meta_matches_its_transformers_twin(tmp_path, tied):
    twin = hf_llama(**{**LLAMA32_SHAPE, "tie_word_embeddings": tied})
    write_meta_folder(tmp_path, twin, META_PARAMS)
    ours = Llama3.from_meta(tmp_path, max_seq_len=128,
                            rope_scaling={"factor": 32.0, "original_max_position_embeddings": 16})
    assert ours.args.hidden_dim == 256 and ours.args.tie_embeddings == tied
    assert ours.args.rope_scaling == LLAMA32_SHAPE["rope_scaling"]
    assert_same_as_hf(ours, twin)


def test_from_meta_without_output_weight_ties_and_defaults_to_llama31_scaling(tmp_path):
    twin = hf_llama(**LLAMA32_SHAPE)
    write_meta_folder(tmp_path, twin, META_PARAMS, keep_output=False)
    ours = Llama3.from_meta(tmp_path)
    assert ours.args.tie_embeddings and ours.output.weight is ours.tok_embeddings.weight
    # use_scaled_rope alone means Llama 3.1's numbers and its 128K context
    assert ours.args.rope_scaling == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    assert ours.args.max_seq_len == 131072
    cast = Llama3.from_meta(tmp_path, dtype=torch.bfloat16)
    assert cast.tok_embeddings.weight.dtype == torch.bfloat16


# ------------------------------------------------------------------------------------------------- configs
def test_hf_config_round_trip():
    args = ModelArgs(vocab_size=97, d_model=32, heads=4, group_size=2, num_layers=2, max_seq_len=64, head_dim=16,
                     tie_embeddings=True, norm_eps=1e-6, rope_theta=500000.0,
                     rope_scaling={"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 16}, ffn_hidden_dim=80)  # defaults elsewhere
    config = hf_config_from_args(args)
    assert (config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim,
            config.intermediate_size, config.tie_word_embeddings) == (32, 4, 2, 16, 80, True)
    back = args_from_hf_config(config)
    assert back == args
    assert args_from_hf_config(config.to_dict()) == args


def test_transformers_4_and_5_config_layouts_agree(tmp_path):
    """rope_theta and rope_scaling at the top level (transformers 4) or inside rope_parameters (transformers 5)."""
    scaling = {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192, "rope_type": "llama3"}
    common = {"model_type": "llama", "vocab_size": 128, "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
              "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "tie_word_embeddings": True}
    v4 = {**common, "rope_theta": 500000.0, "rope_scaling": scaling}
    v5 = {**common, "rope_parameters": {**scaling, "rope_theta": 500000.0}}
    (tmp_path / "config.json").write_text(json.dumps(v4))
    from_v4 = args_from_hf_config(tmp_path / "config.json")
    from_v5 = args_from_hf_config(v5)
    assert from_v4 == from_v5
    assert (from_v4.rope_theta, from_v4.rope_scaling["factor"], from_v4.group_size, from_v4.head_dim) == (
        500000.0, 32.0, 4, 16)
    # no scaling: rope_parameters with rope_type "default"
    plain = args_from_hf_config({**common, "rope_parameters": {"rope_type": "default", "rope_theta": 1e4}})
    assert plain.rope_scaling is None and plain.rope_theta == 1e4


def test_rope_frequencies_match_transformers():
    """The config written for transformers produces transformers' own scaled frequencies, equal to ours."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    args = tiny_args(rope_theta=500000.0, rope_scaling={"factor": 32.0, "low_freq_factor": 1.0,
                                                        "high_freq_factor": 4.0,
                                                        "original_max_position_embeddings": 16})
    theirs = LlamaRotaryEmbedding(config=hf_config_from_args(args)).inv_freq
    torch.testing.assert_close(Llama3(args).rope.inv_freq, theirs, atol=0, rtol=1e-6)


# -------------------------------------------------------------------------------------------------- errors
def saved_hf_folder(tmp_path, config=UNTIED_GQA):
    hf_llama(**config).save_pretrained(tmp_path)
    return tmp_path


def edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_missing_key_is_named(tmp_path):
    folder = saved_hf_folder(tmp_path)
    state = load_file(folder / "model.safetensors")
    del state["model.layers.1.self_attn.k_proj.weight"]
    save_file(state, folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing keys: layers\.1\.attention\.wk\.weight"):
        Llama3.from_hf(folder)


def test_wrong_shape_is_named(tmp_path):
    folder = saved_hf_folder(tmp_path)
    edit_config(folder, intermediate_size=192)
    with pytest.raises(ValueError, match=r"(?s)do not match its config.*wrong shapes: layers\.0\.feed_forward\.w1"):
        Llama3.from_hf(folder)


def test_unexpected_key_is_named(tmp_path):
    folder = saved_hf_folder(tmp_path)
    state = load_file(folder / "model.safetensors")
    state["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(128)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"unexpected keys: model\.layers\.0\.self_attn\.q_proj\.bias"):
        Llama3.from_hf(folder)


@pytest.mark.parametrize("changes,message", [
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}}, "rope_type='yarn' is not supp"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_type='linear' is not supported"),
    ({"model_type": "mistral"}, "model_type is 'mistral', not 'llama'"),
    ({"attention_bias": True}, "attention_bias=true"),
], ids=["rope-yarn", "rope-linear-v4", "not-llama", "bias"])
def test_unsupported_config_is_refused(tmp_path, changes, message):
    folder = saved_hf_folder(tmp_path)
    edit_config(folder, **changes)
    with pytest.raises(ValueError, match=message):
        Llama3.from_hf(folder)


def test_missing_folder_files_and_shards(tmp_path):
    with pytest.raises(FileNotFoundError, match="No folder at"):
        Llama3.from_hf(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="snapshot_download"):
        Llama3.from_hf("meta-llama/Llama-3.2-1B")  # a Hub id is not a folder: the message says how to get one
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="is empty"):
        Llama3.from_hf(empty)
    with pytest.raises(FileNotFoundError, match="is empty"):
        Llama3.from_meta(empty)

    folder = tmp_path / "hf"
    hf_llama(**UNTIED_GQA).save_pretrained(folder, max_shard_size="40KB")
    shard = sorted(folder.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=f"names shards that are not in .*{shard.name}"):
        Llama3.from_hf(folder)
    (folder / "model.safetensors.index.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        Llama3.from_hf(folder)
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        Llama3.from_hf(folder)


def test_bad_meta_folders(tmp_path):
    twin = hf_llama(**LLAMA32_SHAPE)
    write_meta_folder(tmp_path, twin, META_PARAMS)
    state = torch.load(tmp_path / "consolidated.00.pth", weights_only=True)
    torch.save(state, tmp_path / "consolidated.01.pth")
    with pytest.raises(ValueError, match="2 model-parallel shards"):
        Llama3.from_meta(tmp_path)
    del state["layers.0.feed_forward.w3.weight"]
    torch.save(state, tmp_path / "consolidated.00.pth")
    (tmp_path / "consolidated.01.pth").unlink()
    with pytest.raises(ValueError, match=r"missing keys: layers\.0\.feed_forward\.w3\.weight"):
        Llama3.from_meta(tmp_path)
    (tmp_path / "params.json").write_text(json.dumps({**META_PARAMS, "ffn_dim_multiplier": 1.0}))
    with pytest.raises(ValueError, match=r"wrong shapes: layers\.0\.feed_forward\.w1\.weight"):
        Llama3.from_meta(tmp_path)
    (tmp_path / "params.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no params.json"):
        Llama3.from_meta(tmp_path)


def test_validate_rope_scaling_default_means_none():
    assert validate_rope_scaling({"rope_type": "default"}) is None


# ------------------------------------------------------------------------------------- the real releases' configs
# meta-llama/Llama-3.2-1B's config.json (transformers 4 layout, as published) and its original/params.json.
LLAMA32_1B_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 128000,
    "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
    "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": False, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8, "pretraining_tp": 1,
    "rms_norm_eps": 1e-05, "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                            "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_cache": True,
    "vocab_size": 128256}
LLAMA32_1B_PARAMS = {"dim": 2048, "ffn_dim_multiplier": 1.5, "multiple_of": 256, "n_heads": 32, "n_kv_heads": 8,
                     "n_layers": 16, "norm_eps": 1e-05, "rope_theta": 500000.0, "use_scaled_rope": True,
                     "vocab_size": 128256}
LLAMA31_8B_PARAMS = {"dim": 4096, "ffn_dim_multiplier": 1.3, "multiple_of": 1024, "n_heads": 32, "n_kv_heads": 8,
                     "n_layers": 32, "norm_eps": 1e-05, "rope_theta": 500000.0, "use_scaled_rope": True,
                     "vocab_size": 128256}


def count_parameters(args: ModelArgs) -> int:
    with torch.device("meta"):  # shapes only, no memory
        return Llama3(args).num_parameters()


def test_real_release_configs_give_the_published_sizes():
    """Llama 3.2 1B has 1,235,814,400 parameters and Llama 3.1 8B 8,030,261,248 (their model cards' 1.24B / 8.03B);
    the HF config and Meta's params.json of 3.2 1B describe the same model once Meta's factor is set to 32."""
    from_hf = args_from_hf_config(LLAMA32_1B_CONFIG)
    from_meta = args_from_meta_params(LLAMA32_1B_PARAMS, rope_scaling={"factor": 32.0}, tie_embeddings=True)
    assert from_hf.hidden_dim == from_meta.hidden_dim == 8192
    assert (from_hf.group_size, from_hf.head_dim, from_hf.max_seq_len) == (4, 64, 131072)
    assert from_hf.rope_scaling == from_meta.rope_scaling and from_hf.rope_theta == from_meta.rope_theta
    assert count_parameters(from_hf) == count_parameters(from_meta) == 1_235_814_400

    llama31 = args_from_meta_params(LLAMA31_8B_PARAMS)
    assert llama31.hidden_dim == 14336 and llama31.rope_scaling["factor"] == 8.0
    assert count_parameters(llama31) == 8_030_261_248


def test_a_config_without_a_required_key_names_the_file_and_the_key(tmp_path):
    folder = saved_hf_folder(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    del config["intermediate_size"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"{folder}/config\.json has no intermediate_size: a Llama config"):
        Llama3.from_hf(folder)
    with pytest.raises(ValueError, match="the config has no intermediate_size"):
        args_from_hf_config(config)


def test_broken_json_in_hf_and_meta_folders_names_the_file(tmp_path):
    folder = saved_hf_folder(tmp_path / "hf")
    (folder / "config.json").write_text('{"model_type": "llama",')
    with pytest.raises(ValueError, match=rf"{folder}/config\.json is not valid JSON"):
        Llama3.from_hf(folder)
    with pytest.raises(ValueError, match=rf"{folder}/config\.json is not valid JSON"):
        Llama3.from_pretrained(folder)
    (folder / "config.json").write_text('["llama"]')
    with pytest.raises(ValueError, match=rf"{folder}/config\.json holds a JSON list, not an object"):
        Llama3.from_hf(folder)

    meta = tmp_path / "meta"
    write_meta_folder(meta, hf_llama(**LLAMA32_SHAPE), META_PARAMS)
    (meta / "params.json").write_text("[]")
    with pytest.raises(ValueError, match=rf"{meta}/params\.json holds a JSON list"):
        Llama3.from_meta(meta)
