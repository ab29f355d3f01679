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


@pytest.mark.parametrize("text", ["{ not json", '{"a" 1}', "[1, }", '{"a": [tru]}'])
def test_malformed_input_is_a_value_error_without_json_imported(text):
    """_json's scanner raises JSONDecodeError only if json.decoder is already in
    sys.modules; hako's hot paths never import it (a SystemError otherwise)."""
    import subprocess
    import sys
    from pathlib import Path
    repo = str(Path(__file__).resolve().parents[2])
    code = (f"import sys; sys.path.insert(0, {repo!r}); from runtime import fastjson\n"
            f"try:\n    fastjson.loads({text!r})\nexcept ValueError:\n    print('ValueError')\n"
            "print('json' in sys.modules)")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                         text=True, timeout=30)
    assert out.stdout.split() == ["ValueError", "False"], out.stderr
