"""The fast reader's contract: for any text it returns exactly what ruamel's safe loader
returns, or it steps aside (Unsupported); a duplicate key is an error in both."""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from minisip.config import fastyaml
from minisip.config.store import dump, to_node
from tests.helpers import CONFIGS


def ruamel(text: str) -> Any:
    return YAML(typ="safe").load(text)


def same(a: Any, b: Any) -> bool:
    """Equal with equal types (1, 1.0 and True are all == in Python)."""
    if type(a) is not type(b) and not (isinstance(a, dict) and isinstance(b, dict)) and not (
            isinstance(a, list) and isinstance(b, list)):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(k, k2) and same(a[k], b[k2])
                                          for k, k2 in zip(a, b, strict=True))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) or (a != a and b != b)  # nan


def check_contract(text: str) -> str:
    """'fast', 'unsupported' or 'error'; fails the test if the contract is broken."""
    try:
        fast = fastyaml.parse(text)
    except fastyaml.Unsupported:
        return "unsupported"
    except fastyaml.DuplicateKey:
        with pytest.raises(YAMLError):
            ruamel(text)
        return "error"
    try:
        slow = ruamel(text)
    except YAMLError as exc:
        pytest.fail(f"fast reader accepted what ruamel refuses ({exc}):\n{text}")
    assert same(fast, slow), f"fast {fast!r} != ruamel {slow!r} for:\n{text}"
    return "fast"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_read_by_the_fast_path(path: Any) -> None:
    assert check_contract(path.read_text()) == "fast"


SNIPPETS = [
    "a: 1\nb: -2\nc: +3\nd: 0123\ne: 1.5\nf: -0.25\ng: true\nh: FALSE\ni: ~\nj: null\nk:\n",
    "a: yes\nb: no\nc: on\nd: 1_000\ne: 0x1F\nf: 0o17\ng: .5\nh: 1e3\ni: .inf\nj: .nan\n",
    "a: 2024-01-01\nb: 12:30\nc: 1:2:3\nd: 192.168.1.1\ne: ::1\nf: 10.0.0.0/8\n",
    "a: 'it''s'\nb: \"q\\\"uote\\\\ \\t\\u00e9\\x41\"\nc: ''\nd: \"\"\ne: 'a # b'\n",
    "a: b #c\nd: e#f\ng: h: i\n", "a: b:\n", "a: -\n", "a: - b\n", "a: ? b\n",
    "a:\n- 1\n- 2\nb: 3\n", "a:\n  - x: 1\n    y: [1, \"2\", 'c']\n  - - 3\n    - 4\n  -\n",
    "- a\n- b: 1\n  c: 2\n-   d: 3\n    e: 4\n", "a: [1, 2,]\nb: [,]\nc: [a: b]\n",
    "a: {}\nb: []\nc: { }\nd: {x: 1}\ne: [ ]\n", "a: x\n  y\n", "a:\n  b: 1\n c: 2\n",
    "a: 1\na: 2\n", "1: x\ntrue: y\n", "a: &x 1\nb: *x\n", "a: !!str 1\n", "a: |\n  x\n",
    "a: >\n  x\n", "---\na: 1\n", "a: 1\n...\n", "%YAML 1.1\n---\na: yes\n", "? a\n: b\n",
    "  a: 1\n  b: 2\n", "a:\tb\n", "a: b\r\nc: d\r\n", "a: b\rc: d\n", "\ufeffa: 1\n",
    "a: \"unterminated\n", "a: 'x'y\n", "a: \"x\" # c\nb: 'y'   # d\n", '"a b": 1\n',
    "'': 1\n", "a:b\n", "a: [x, [y]]\n", "a: b]c{d}\n", "a: b,c\n", "a: `x`\n", "a: @x\n",
    "a: %x\n", "<<: {}\n", "a: =\n", "# only a comment\n", "", "\n\n", "a: 1 # c\n# c\n",
    "users:\n  \"100\":\n    password: \"100\"\n    allowed_ips: [\"10.0.0.0/8\"]\n",
    "a:\n  b:\n    c:\n      d: [1]\n", "a: -.5\nb: +.5\nc: 5.\nd: 0.\n", "a: 00\nb: -00\n",
]


@pytest.mark.parametrize("text", SNIPPETS)
def test_snippet_matches_ruamel_or_steps_aside(text: str) -> None:
    check_contract(text)


def test_common_forms_are_not_left_to_ruamel() -> None:
    """The speed comes from staying on the fast path for what config files contain."""
    for text in ["a: 1\nb: [x, \"y\"]\nc:\n  - d: 'e'\n    f: {}\n", "a:\n- 1\n",
                 "a: \"x\\\"y\"  # c\n", "a: 0123\n"]:
        assert check_contract(text) == "fast", text


def test_lines_are_recorded_for_keys_and_items() -> None:
    doc = fastyaml.parse("# c\na:\n  b: 1\n\n  c:\n    - x\n    - y: 2\n")
    assert doc.lines == {"a": 2}
    assert doc["a"].lines == {"b": 3, "c": 5}
    assert doc["a"]["c"].lines == [6, 7]
    assert doc["a"]["c"][1].lines == {"y": 7}


def test_duplicate_key_reports_both_lines() -> None:
    with pytest.raises(fastyaml.DuplicateKey) as info:
        fastyaml.parse("a:\n  x: 1\n  y: 2\n  x: 3\n")
    assert (info.value.key, info.value.line, info.value.first_line) == ("x", 4, 2)


# -- fuzzing: mutated config text, and data written by the store -------------------------

BASE = """\
users:
  "100":
    password: "p#1 x"
    display_name: 'O''Neil'
    allowed_ips: [10.0.0.0/8, "::1"]
    follow_me:
      strategy: 2
      destinations: {}
  alice:
    password: s3cret   # comment
    max_duration: 0
list:
  - a: 1
    b: [x, y]
  -
  - - 1
    - 2.5
  - text: null
empty:
"""
WINDOWS = [BASE] + [
    "\n".join(text.splitlines()[i:i + 12]) + "\n"
    for path in sorted(CONFIGS.glob("*.yaml")) if path.name != "users.yaml"
    for text in [path.read_text()] for i in range(0, len(text.splitlines()), 12)]
ALPHABET = list(" :-#'\"[]{},\n&*!|>%@`\\\t") + ["  ", "- ", ": ", " #", "0", "x", "1.5",
                                                  "true", "~", "\n  ", "\n- "]


@st.composite
def mutated(draw: Any) -> str:
    text: str = draw(st.sampled_from(WINDOWS))
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "dup_line", "indent"]))
        if op == "insert":
            text = text[:pos] + draw(st.sampled_from(ALPHABET)) + text[pos:]
        elif op == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 4)):]
        else:
            lines = text.splitlines(True)
            if not lines:
                continue
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i] if op == "dup_line" else "  " + lines[i])
            if op == "indent":
                del lines[i + 1]
            text = "".join(lines)
    return text


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(mutated())
def test_mutated_text_matches_ruamel_or_steps_aside(text: str) -> None:
    check_contract(text)


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12),
    st.sampled_from(["100", "0086", "*90", "yes", "null", "1.5", "a: b", "#x", "- y", "'q'",
                     "\"dq\"", "2024-01-01", "", " lead", "trail ", "x #y"]))
keys = st.one_of(st.text(st.characters(codec="ascii", exclude_categories=("Cc",)),
                         min_size=1, max_size=8), st.integers(0, 999))
documents = st.dictionaries(keys, st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                     st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12), min_size=1, max_size=5)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(documents)
def test_what_the_store_writes_is_read_back_exactly(doc: dict[str, Any]) -> None:
    text = dump(to_node(doc))
    assert check_contract(text) in ("fast", "unsupported")
    assert same(ruamel(text), doc)
