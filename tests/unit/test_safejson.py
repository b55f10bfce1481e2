"""common.safejson: the limits around the standard parser, and the string rules."""

import json

import pytest

from common import safejson
from common.safejson import MAX_DEPTH, MAX_NUMBER_CHARS, InvalidJson


def test_ordinary_json_parses_as_the_standard_parser_does():
    text = json.dumps({"a": [1, 2.5, "x", None, True], "ü": {"b": "💥"}, "n": -10**20})
    assert safejson.loads(text) == json.loads(text) == safejson.loads(text.encode())


@pytest.mark.parametrize("text", [
    "[" * 100_000 + "]" * 100_000,          # RecursionError in the standard parser
    "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
    '{"a": ' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1),
])
def test_nesting_past_the_limit_is_refused(text):
    with pytest.raises(InvalidJson, match="nested"):
        safejson.loads(text)


def test_nesting_at_the_limit_parses_and_brackets_in_strings_do_not_count():
    assert safejson.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    assert safejson.loads(json.dumps({"s": "[" * 1000})) == {"s": "[" * 1000}


@pytest.mark.parametrize("text", ["1" * 5000, "9" * (MAX_NUMBER_CHARS + 1), "1." + "0" * MAX_NUMBER_CHARS,
                                  "1e999", "-1e999", "NaN", "[Infinity]", "-Infinity"])
def test_numbers_too_long_or_not_finite_are_refused(text):
    with pytest.raises(InvalidJson):
        safejson.loads(text)


@pytest.mark.parametrize("text", ['"a\\u0000b"', '{"\\u0000": 1}', '["\\ud800"]', '"\\udfff"', '"x\ud800"'])
def test_unstorable_strings_are_rejected_replaced_or_kept(text):
    with pytest.raises(InvalidJson, match="NUL"):
        safejson.loads(text)
    assert "\ufffd" in json.dumps(safejson.loads(text, strings="replace"), ensure_ascii=False)
    kept = safejson.loads(text, strings="keep")
    assert kept == json.loads(text)
    assert safejson.clean(kept) == safejson.loads(text, strings="replace")


def test_a_surrogate_pair_is_one_character_and_fine():
    assert safejson.loads('"\\ud83d\\ude00"') == "😀"


@pytest.mark.parametrize("data", [b"\xff\xfe", b'"\xc3"', "{", "", "{}x", b"\x00"])
def test_what_is_not_json_is_refused(data):
    with pytest.raises(InvalidJson) as err:
        safejson.loads(data)
    assert (err.value.status, err.value.code) == (400, "invalid_json")
