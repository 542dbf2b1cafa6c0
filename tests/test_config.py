"""ModelArgs checks every field at construction: the right type (a bool is not an int, an int field refuses floats,
a float field takes ints), finite, in range, with a message that names the field. And a config.json that breaks
these rules is refused with the file's name."""

import dataclasses
import json
import math

import pytest

from llama3 import Llama3, ModelArgs
from tests.conftest import tiny_args

NAN, INF = float("nan"), float("inf")
SCALING = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}


class FakeTokenizer:
    pad_token_id = 3

    def __len__(self):
        return 50


# field -> bad values: (value, exception). tiny_args() supplies every other field.
BAD = {
    "vocab_size": [(0, ValueError), (2.5, TypeError), (True, TypeError), ("97", TypeError)],
    "tokenizer": [(FakeTokenizer(), ValueError)],  # 50 tokens, vocab_size 97
    "d_model": [(0, ValueError), (32.0, TypeError), (True, TypeError)],
    "heads": [(-4, ValueError), (4.0, TypeError), (None, TypeError)],
    "group_size": [(0, ValueError), (2.0, TypeError), (True, TypeError)],
    "num_layers": [(0, ValueError), (2.5, TypeError), (False, TypeError)],
    "max_seq_len": [(0, ValueError), (64.0, TypeError), ("64", TypeError)],
    "use_flash": [("no", TypeError), (1, TypeError), (None, TypeError)],
    "multiple_of": [(0, ValueError), (16.0, TypeError), (True, TypeError)],
    "ffn_dim_multiplier": [(0, ValueError), (-1.3, ValueError), (NAN, ValueError), (INF, ValueError),
                           ("1.3", TypeError), (True, TypeError)],
    "norm_eps": [(NAN, ValueError), (INF, ValueError), (0, ValueError), (-1e-5, ValueError), ("1e-5", TypeError),
                 (True, TypeError), (None, TypeError)],
    "rope_theta": [(NAN, ValueError), (INF, ValueError), (0.0, ValueError), ("5e5", TypeError), (True, TypeError)],
    "rope_scaling": [("llama3", TypeError), ({**SCALING, "factor": NAN}, ValueError),
                     ({**SCALING, "factor": "8"}, TypeError), ({**SCALING, "low_freq_factor": 0.0}, ValueError),
                     ({**SCALING, "original_max_position_embeddings": 16.5}, TypeError),
                     ({"factor": 8.0}, ValueError), ({**SCALING, "rope_type": "yarn"}, ValueError)],
    "max_batch_size": [(0, ValueError), (32.0, TypeError), (True, TypeError)],
    "tie_embeddings": [("false", TypeError), (0, TypeError), (None, TypeError)],
    "dropout": [(1.0, ValueError), (-0.1, ValueError), (NAN, ValueError), ("0", TypeError), (True, TypeError)],
    "pad_token_id": [(1.5, TypeError), (-1, ValueError), (97, ValueError), (True, TypeError)],
    "ffn_hidden_dim": [(2.5, TypeError), (0, ValueError), (-8, ValueError), (True, TypeError)],
    "head_dim": [(0, ValueError), (-2, ValueError), (2.5, TypeError), (3, ValueError), (True, TypeError)],
}
CASES = [(field, value, error) for field, values in BAD.items() for value, error in values]


def test_every_field_has_bad_values_tested():
    fields = {f.name for f in dataclasses.fields(ModelArgs)} - {"_"}
    assert set(BAD) == fields


@pytest.mark.parametrize("field,value,error", CASES,
                         ids=[f"{field}={value!r}"[:40] for field, value, _ in CASES])
def test_bad_value_is_refused_naming_the_field(field, value, error):
    with pytest.raises(error) as info:
        tiny_args(**{field: value})
    assert type(info.value) is error  # TypeError for a wrong type, ValueError for a bad value, nothing else
    assert field in str(info.value) or (field == "tokenizer" and "tokenizer" in str(info.value))


def test_float_fields_take_ints_and_store_floats():
    args = tiny_args(norm_eps=1, rope_theta=10000, dropout=0, ffn_dim_multiplier=2)
    assert (args.norm_eps, args.rope_theta, args.dropout, args.ffn_dim_multiplier) == (1.0, 10000.0, 0.0, 2.0)
    assert all(type(v) is float for v in (args.norm_eps, args.rope_theta, args.dropout, args.ffn_dim_multiplier))
    assert tiny_args(rope_scaling={**SCALING, "factor": 8}).rope_scaling["factor"] == 8.0


def test_good_values_still_work():
    args = tiny_args(head_dim=4, pad_token_id=0, ffn_hidden_dim=40, use_flash=False, tie_embeddings=True,
                     rope_scaling=SCALING, dropout=0.1)
    assert (args.head_dim, args.pad_token_id, args.hidden_dim) == (4, 0, 40)
    assert args.rope_scaling == {"rope_type": "llama3", **SCALING}
    assert math.isclose(tiny_args(norm_eps=1e-6).norm_eps, 1e-6)


# ------------------------------------------------------------------------------------------- config.json files
def saved_folder(tmp_path, **changes):
    torch_model = Llama3(tiny_args())
    torch_model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(changes)
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_config_json_with_a_string_bool_is_refused_naming_the_file(tmp_path):
    folder = saved_folder(tmp_path, tie_embeddings="false")
    with pytest.raises(TypeError, match=r"config\.json.*ModelArgs\.tie_embeddings must be a bool"):
        Llama3.from_pretrained(folder)
    saved_folder(tmp_path, tie_embeddings=False, use_flash="no")
    with pytest.raises(TypeError, match=r"config\.json.*use_flash"):
        Llama3.from_pretrained(folder)


def test_config_json_that_is_not_json_or_not_an_object_names_the_file(tmp_path):
    folder = saved_folder(tmp_path)
    (folder / "config.json").write_text('{"vocab_size": 97,')
    with pytest.raises(ValueError, match=rf"{tmp_path}/config\.json is not valid JSON"):
        Llama3.from_pretrained(folder)
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=rf"{tmp_path}/config\.json holds a JSON list, not an object"):
        Llama3.from_pretrained(folder)
    with pytest.raises(TypeError, match="needs a dict"):
        ModelArgs.from_dict([1, 2])
