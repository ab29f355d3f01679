"""The schema's patterns are checked without ``re`` on create's path
(spec.validate.FAST_PATTERNS): each must agree with the ECMA-262 reading
(``re`` with a trailing ``$`` as ``\\Z``) on any string."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from spec import validate

SCHEMA = Path(validate.SCHEMA_DIR) / "config.schema.json"
ALPHABET = st.sampled_from(list("RLIMIT_ABCZacbup0129, -KMGBx:\n\t") + ["\u0663", "\u00e9"])


def _patterns(node) -> set[str]:
    out = set()
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str):
            out.add(node["pattern"])
        for v in node.values():
            out |= _patterns(v)
    elif isinstance(node, list):
        for v in node:
            out |= _patterns(v)
    return out


def test_every_schema_pattern_has_a_fast_matcher():
    """A new pattern in the schema would send create through ``re`` again."""
    assert _patterns(json.loads(SCHEMA.read_text())) <= set(validate.FAST_PATTERNS)


@pytest.mark.parametrize("pattern", sorted(validate.FAST_PATTERNS))
@settings(max_examples=400, deadline=None)
@given(value=st.one_of(st.text(ALPHABET, max_size=12),
                       st.sampled_from(["RLIMIT_NOFILE", "RLIMIT_", "RLIMIT_CORE\n", "c", "cb",
                                        "0-3,5", "2MB", "02MB", "1GB\n", "MB:0=100", "MB:\n"])))
def test_fast_matcher_agrees_with_re(pattern, value):
    rx = validate._compile(pattern)
    assert validate.FAST_PATTERNS[pattern](value) == (rx.search(value) is not None)
