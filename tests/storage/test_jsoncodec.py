"""The fast JSON encoder gives what the standard library would read back the same."""
import json

from storage import jsoncodec


def test_encodes_like_the_standard_library():
    value = {"a": [1, 2.5, None, True, "é\u2028"], "nested": {"x": ""}}
    assert json.loads(jsoncodec.dumps(value)) == value


def test_falls_back_where_orjson_refuses():
    assert json.loads(jsoncodec.dumps({"big": 2**70})) == {"big": 2**70}
    assert jsoncodec.dumps({1: "x"}, separators=(",", ":")) == '{"1":"x"}'


def test_decoding_keeps_big_integers_exact():
    assert jsoncodec.loads("123456789012345678901234567890") == 123456789012345678901234567890
