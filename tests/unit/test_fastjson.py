"""runtime.fastjson must agree with the json module on everything hako writes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from runtime import fastjson

scalars = st.none() | st.booleans() | st.integers() | st.text() | \
    st.floats(allow_nan=False, allow_infinity=False)
docs = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) |
                    st.dictionaries(st.text(max_size=8), inner, max_size=5), max_leaves=30)


@given(docs, st.sampled_from([None, 2, "\t"]))
def test_dumps_matches_json(doc, indent):
    assert fastjson.dumps(doc, indent=indent) == json.dumps(doc, indent=indent)


@given(docs)
def test_loads_roundtrip(doc):
    text = json.dumps(doc)
    assert fastjson.loads(text) == json.loads(text)
    assert fastjson.loads(text.encode()) == json.loads(text)


@given(st.text(max_size=30))
def test_loads_rejects_what_json_rejects(text):
    try:
        expected = json.loads(text)
    except ValueError:
        with pytest.raises(ValueError):
            fastjson.loads(text)
        return
    if any(c in text for c in ("NaN", "Infinity")):
        return  # json accepts these non-standard constants; hako's state never has them
    assert fastjson.loads(text) == expected


def test_padding_and_garbage():
    assert fastjson.loads('  {"a": [1, 2]}\n') == {"a": [1, 2]}
    with pytest.raises(ValueError):
        fastjson.loads('{"a": 1} x')
    with pytest.raises(ValueError):
        fastjson.loads("")
