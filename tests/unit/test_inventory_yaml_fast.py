"""The fast YAML reader gives exactly libyaml's data, or declines (then libyaml is used).

Differential: random documents built from the constructs inventories use and the ones the fast
reader must refuse (anchors, tags, escapes, continuation lines, odd indentation, duplicate keys,
tabs, non-string scalars ...). For each: libyaml's result through the original path, and the
fast reader's; where the fast reader answers, it must be identical, and never where libyaml
reports a problem.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import yaml

from reconciler.model import yamlio
from tests.fixtures.inventory import example_files
from tests.unit.test_inventory_validate import CORPUS

# Values the fast reader should take (mostly) and values it must get right or refuse.
GOOD = ["plain", "two words", "a  b", "x#y", "a #comment", "http://h:80/p?q=1", "true", "no",
        "null", "~", "7", "-3", "'sq'", '"dq"', "[a, b]", "[]", '["q", \'r\', s t]',
        "bmc-1.oob.example:443", "console=ttyS0,115200n8", "10.0.0.1", "trailing   ", "é ü"]
EDGE = [
    "plain", "two words", "a  b", "x#y", "a #comment", "http://h:80/p?q=1", "52:54:00:18:00:01",
    "bmc-1.oob.example:443", "console=ttyS0,115200n8", "true", "False", "yes", "No", "on",
    "OFF", "y", "n", "null", "Null", "~", "0", "7", "-3", "+4", "0644", "0x1f", "1_000", "1.5",
    "1e3", ".inf", "2024-01-02", "12:30", "=", "<<", "-", "-x", "?x", ":x", "a:b", "a: b", "a:",
    '"dq"', '"d#q"', '"a \\" b"', '"esc\\n"', "'sq'", "'it''s'", "''", '""', "[a, b]", "[]",
    "[ ]", "[a, [b]]", "[a,]", '["q", \'r\', s t]', "[a:b]", "{a: 1}", "{}", "&anc v", "*ali",
    "!!str 5", "!tag x", "|", ">", "|-", "%x", "@x", "`x`", "[a, b] # c", "\"q\" # c",
    "\"q\"#c", "a\tb", "é ü", "ﬁx", "x\u2028y", "x\x85y", "(paren)", "$dollar", "^caret",
    "10.0.0.1", "10.0.0.0/21", "'a # b'", "[\"a # b\"]", "trailing   ",
]
GOOD_KEYS = ["a", "b", "state", "bmc", "x-y", "k.v", "_u", "c", "d", "e", "f", "g"]
EDGE_KEYS = ["on", "yes", "1", "null", "\"q\"", "'s'", "a b", "a:b", "-k", "? k", "<<", "N"]


def _scalar(rng: random.Random) -> str:
    return rng.choice(EDGE if rng.random() < 0.06 else GOOD)


def _key(rng: random.Random) -> str:
    return rng.choice(EDGE_KEYS if rng.random() < 0.04 else GOOD_KEYS)


def _doc(rng: random.Random, depth: int, indent: int, out: list[str]) -> None:
    """Append a random block mapping or sequence at ``indent`` to ``out``."""
    pad = " " * indent
    if rng.random() < 0.75:
        for _ in range(rng.randint(1, 4)):
            key = _key(rng)
            if depth > 0 and rng.random() < 0.35:
                out.append(f"{pad}{key}:" + rng.choice(["", " ", "  # note"]))
                child = indent + rng.choice([2, 2, 2, 2, 4, 1, 0])
                if rng.random() < 0.2:
                    out.append(rng.choice(["", "# between", "   # indented comment"]))
                _doc(rng, depth - 1, child, out)
            else:
                out.append(f"{pad}{key}:{rng.choice([' ', '  '])}{_scalar(rng)}")
            if rng.random() < 0.02:
                out.append(rng.choice([f"{pad}  continued", f"{pad}\tx: 1", "---", "...",
                                       f"{pad}- stray", f" {pad}mis: 1"]))
    else:
        for _ in range(rng.randint(1, 3)):
            if depth > 0 and rng.random() < 0.5:
                gap = rng.choice([" ", " ", "   "])
                first = f"{_key(rng)}: {_scalar(rng)}"
                out.append(f"{pad}-{gap}{first}")
                inner = indent + 1 + len(gap)
                for _ in range(rng.randint(0, 2)):
                    out.append(f"{' ' * inner}{_key(rng)}: {_scalar(rng)}")
                if rng.random() < 0.3:
                    out.append(f"{' ' * inner}{_key(rng)}:")
                    _doc(rng, depth - 1, inner + rng.choice([2, 0]), out)
            else:
                out.append(f"{pad}-{rng.choice([' ', '  '])}{_scalar(rng)}")


def _reference(text: str) -> tuple[Any, bool]:
    """libyaml through the original path: (data, had problems)."""
    loader = yamlio._CheckingLoader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else yamlio._build(node, loader, set())
    except yaml.YAMLError:
        return None, True
    finally:
        loader.dispose()
    return data, bool(loader.duplicate_lines)


def _check(text: str) -> bool:
    fast = yamlio.fast_load(text)
    if fast is yamlio._NOT_SIMPLE:
        return False
    data, problems = _reference(text)
    assert not problems, f"fast reader accepted what libyaml rejects:\n{text}"
    assert fast == data and _types(fast) == _types(data), f"differs:\n{text}\n{fast!r}\n{data!r}"
    return True


def _types(value: Any) -> Any:
    """Structure with types, so True and 1 (equal in Python) are told apart."""
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    return type(value).__name__


@pytest.mark.parametrize("seed", range(4))
def test_fast_reader_agrees_with_libyaml_on_random_documents(seed: int) -> None:
    rng = random.Random(seed)
    accepted = 0
    for _ in range(1500):
        lines: list[str] = []
        if rng.random() < 0.3:
            lines.append("# yaml-language-server: $schema=x.json")
        _doc(rng, 3, rng.choice([0, 0, 0, 2]), lines)
        text = "\n".join(lines) + rng.choice(["\n", "", "\n\n", "\n# end\n"])
        accepted += _check(text)
    assert accepted > 100  # the generator reaches the fast path, not only the fallback


def test_fast_reader_takes_real_inventory_files_and_agrees() -> None:
    texts = [d.decode() for d in example_files().values()]
    texts += [d.decode("utf-8", "replace") for files, _ in CORPUS.values() for d in files.values()]
    accepted = sum(_check(t) for t in texts)
    assert accepted >= len(texts) // 2


@pytest.mark.parametrize("text", [
    "a: 1\na: 2\n",                  # duplicate key: libyaml path reports it
    "a: &x 1\nb: *x\n",              # anchors
    "a: |\n  text\n",                # block scalar
    "a: b\n  c\n",                   # continuation line
    "a:\n\tb: 1\n",                  # tab
    "a: 1.5\n",                      # float
    "a: 0644\n",                     # YAML 1.1 octal
    "a: {b: 1}\n",                   # flow mapping
    'a: "x\\ty"\n',                  # escape
    "---\na: 1\n",                   # document marker
    "yes: 1\n",                      # a boolean key
    "a: 52:54:00:18:00:01\n",        # base-60 integer in YAML 1.1
])
def test_fast_reader_declines(text: str) -> None:
    assert yamlio.fast_load(text) is yamlio._NOT_SIMPLE


def test_fast_reader_result() -> None:
    text = ("# modeline\nstate: provisioned\nprotected: false\nbmc:\n  address: h:443\n"
            "interfaces:\n- mac: \"02:00\"\n  address: auto\n-   mac: '02:01'\n"
            "cloud_init:\n  user_data:\n    runcmd: [\"echo a\", b c]   # why\n    n: ~\n")
    assert yamlio.fast_load(text) == {
        "state": "provisioned", "protected": False, "bmc": {"address": "h:443"},
        "interfaces": [{"mac": "02:00", "address": "auto"}, {"mac": "02:01"}],
        "cloud_init": {"user_data": {"runcmd": ["echo a", "b c"], "n": None}},
    }
