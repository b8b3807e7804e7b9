"""JSON Schema (draft 2020-12) validation of inventory files, with readable messages.

The schemas in ``schemas/inventory/`` are the contract editors see (yaml-language-server);
this module applies the same files and turns each jsonschema error into a
:class:`~reconciler.model.problems.Problem` that names the field as the user wrote it.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
from referencing import Registry, Resource

from reconciler import paths
from reconciler.model.limits import MAX_PROBLEMS_PER_FILE
from reconciler.model.yamlio import Document

SCHEMA_FILES = {
    "server": "server.schema.json",
    "profiles": "profiles.schema.json",
    "subnets": "subnets.schema.json",
    "policy": "policy.schema.json",
    "inspection": "inspection.schema.json",
}

_TYPE_NAMES = {
    dict: "a mapping",
    list: "a list",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "empty",
}


_SCHEMA_TYPES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "boolean": "a boolean (true/false)",
    "integer": "an integer",
    "number": "a number",
}


def schema_dir() -> Path:
    return paths.schemas_dir() / "inventory"


_rs: Any
try:  # Rust validator: much faster on the common, valid case; optional.
    import jsonschema_rs as _rs
except ImportError:  # pragma: no cover - depends on the environment
    _rs = None


def _load_schemas() -> dict[str, dict[str, Any]]:
    return {
        kind: json.loads((schema_dir() / name).read_text()) for kind, name in SCHEMA_FILES.items()
    }


@functools.cache
def _fast_validators() -> dict[str, Any]:
    if _rs is None:
        return {}
    schemas = _load_schemas()
    registry = _rs.Registry([(s["$id"], s) for s in schemas.values()])
    return {kind: _rs.validator_for(s, registry=registry) for kind, s in schemas.items()}


@functools.cache
def _validators() -> dict[str, jsonschema.protocols.Validator]:
    schemas = _load_schemas()
    registry: Registry[Any] = Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in schemas.values()
    )
    out: dict[str, jsonschema.protocols.Validator] = {}
    for kind, schema in schemas.items():
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        out[kind] = cls(schema, registry=registry)
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(error: jsonschema.ValidationError) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(path, message) pairs for one error; a 'required' error names the missing field."""
    path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    kind = error.validator
    what = schema.get("title", "value")
    if kind == "required":
        for name in error.validator_value:
            if isinstance(error.instance, dict) and name not in error.instance:
                yield (*path, name), "required field is missing"
    elif kind == "additionalProperties" and isinstance(error.instance, dict):
        known = list(schema.get("properties", {}))
        for name in error.instance:
            if name in known or not isinstance(name, str):
                continue
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            yield (*path, name), f"unknown field{hint}"
    elif kind == "pattern":
        yield path, f"{_short(error.instance)} is not a valid {what}"
    elif kind == "enum":
        choices = ", ".join(str(c) for c in error.validator_value)
        if isinstance(error.instance, bool):
            yield path, (f"{error.instance} is not one of: {choices} (YAML reads unquoted "
                         "off/on/no/yes as a boolean: quote the value)")
        else:
            yield path, f"{_short(error.instance)} is not one of: {choices}"
    elif kind == "type":
        got = _TYPE_NAMES.get(type(error.instance), type(error.instance).__name__)
        wanted = _SCHEMA_TYPES.get(str(error.validator_value), str(error.validator_value))
        hint = ""
        if error.validator_value == "string" and isinstance(error.instance, int | float):
            # YAML 1.1 reads 52:54:00:18:00:01 as a base-60 integer and 0123 as octal.
            hint = " (quote the value)"
        yield path, f"expected {wanted}, got {got}{hint}"
    elif kind in ("minProperties", "maxProperties") and schema.get("maxProperties") == 1:
        yield path, "give exactly one of: " + ", ".join(schema.get("properties", {}))
    elif kind == "propertyNames":
        yield path, f"{_short(error.instance)} is not a valid name"
    else:
        yield path, error.message


def validate(doc: Document, kind: str, *, hide: frozenset[tuple[str | int, ...]]) -> bool:
    """Append schema problems to ``doc``; ``hide`` holds paths never to echo (secrets)."""
    fast = _fast_validators().get(kind)
    try:
        if fast is not None and fast.is_valid(doc.data):
            return True
    except ValueError:  # what the Rust engine cannot take (a key that is not a string)
        pass
    # Slow path only for documents with errors: jsonschema's errors carry the schema node
    # (title, keyword) our messages are made from.
    validator = _validators()[kind]
    ok = True
    for error in validator.iter_errors(doc.data):
        ok = False
        for path, message in _describe(error):
            if len(doc.problems) > MAX_PROBLEMS_PER_FILE:
                return False  # the caller says that more are not shown
            if any(path[: len(h)] == h for h in hide):
                continue
            doc.problems.append(doc.problem(path, message))
    return ok


# Secrets in the repository. Table: what looks like a secret, checked on every key and string.
_SECRET_KEY = re.compile(
    r"(?i)^(.*password.*|passwd|pass|pw|secret|.*_secret|token|.*_token|api[_-]?key|"
    r"private[_-]?key|client[_-]?secret)$"
)
_SECRET_VALUES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/@\s:]+:[^/@\s]+@"), "a URL with a password"),
)
SECRET_HINT = "keep secrets out of the repository; name a credentials reference instead"


def _secret_key(key: str) -> bool:
    hit = _SECRET_KEYS_SEEN.get(key)
    if hit is None:
        hit = bool(_SECRET_KEY.match(key))
        if len(_SECRET_KEYS_SEEN) >= 4096:
            _SECRET_KEYS_SEEN.clear()
        _SECRET_KEYS_SEEN[key] = hit
    return hit


_SECRET_KEYS_SEEN: dict[str, bool] = {}  # keys repeat in every file: match each once


# A conservative screen on the file's text: a file it passes cannot hold anything the walk
# below reports, so the walk is skipped. Every secret key the table matches contains one of
# these words ("key" not followed by "s": ssh_keys is not one); both value patterns need '@' or
# "-----BEGIN"; a backslash (an escape in a quoted scalar) could spell any of them.
_SUSPECT_WORDS = ("@", "\\", "-----begin", "pass", "pw", "secret", "token")
_KEY_WORD = re.compile(r"key(?!s)")
# ... and a 'user:password' credentials reference needs a colon, quotes, a block scalar or a
# plain scalar continued on the next lines: only a one-token value with nothing more indented
# below it passes.
_PLAIN_CREDENTIALS = re.compile(
    r"([ ]*)(?:-[ ]+)?credentials:[ ]*[A-Za-z0-9_./-]+[ ]*(?:#.*)?\n(?:[ \t]*\n)*+(?!\1[ \t])")


def _may_hold_secrets(text: str) -> bool:
    lower = text.lower()  # one pass, then substring scans (a case-blind regex is slower)
    if any(word in lower for word in _SUSPECT_WORDS):
        return True
    if "key" in lower and _KEY_WORD.search(lower):
        return True
    at = text.find("credentials")
    if at < 0:
        return False
    padded = text + "\n"
    while at >= 0:  # each line naming credentials must be the plain form, from its start
        if not _PLAIN_CREDENTIALS.match(padded, text.rfind("\n", 0, at) + 1):
            return True
        at = text.find("credentials", at + len("credentials"))
    return False


def find_secrets(doc: Document) -> set[tuple[str | int, ...]]:
    """Report values that look like passwords; return their paths so nothing echoes them.
    Every such path is returned; problems stop at the per-file limit."""
    found: set[tuple[str | int, ...]] = set()
    if not _may_hold_secrets(doc.text):
        return found

    def report(path: tuple[str | int, ...], message: str) -> None:
        found.add(path)
        if len(doc.problems) <= MAX_PROBLEMS_PER_FILE:
            doc.problems.append(doc.problem(path, message))

    def walk(value: Any, path: tuple[str | int, ...]) -> None:
        kind = type(value)
        if kind is str:
            # Both value patterns contain a literal '@' or '-----BEGIN ': most strings have
            # neither and skip the regular expressions.
            if "@" in value or "-----BEGIN " in value:
                for pattern, label in _SECRET_VALUES:
                    if pattern.search(value):
                        report(path, f"looks like {label}: {SECRET_HINT}")
                        return
            if ":" in value and path[-2:] == ("bmc", "credentials"):
                report(path, f"looks like 'user:password': {SECRET_HINT}")
        elif kind is dict or (kind is not list and isinstance(value, dict)):
            for key, sub in value.items():
                sub_path = (*path, str(key))
                if (
                    isinstance(key, str)
                    and _secret_key(key)
                    and sub not in (None, "", [], {})
                    and not isinstance(sub, bool)
                ):
                    report(sub_path, f"looks like a password: {SECRET_HINT}")
                    continue
                walk(sub, sub_path)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, (*path, index))
        elif isinstance(value, str):  # a str subclass: same checks as above
            walk(str(value), path)

    walk(doc.data, ())
    return found


# A template is text, not YAML: its lines are screened. "key: value" where the key is a secret
# key and the value is written in the template (not only a {{ expression }} of the inventory's
# data, which is screened where it is written), and the value patterns anywhere.
_TEMPLATE_KEY_LINE = re.compile(
    r"""^[ \t]*(?:-[ \t]+)?["']?([A-Za-z0-9_.-]+)["']?[ \t]*:[ \t]+(\S.*?)[ \t]*$""", re.M)
_EXPRESSION_ONLY = re.compile(r"^(\{\{.*?\}\}|\{%.*?%\}|[\s\"'])*$")
_NOT_A_VALUE = frozenset(("~", "null", "true", "false", "yes", "no", "[]", "{}", "|", ">"))


def template_secrets(text: str) -> list[tuple[int, str]]:
    """(line, what it looks like) for each line of a template that looks like it holds a
    secret. The caller reports them without the value, and renders no such template: its text
    would otherwise be echoed by the messages of any error rendering it."""
    found: list[tuple[int, str]] = []
    if not _may_hold_secrets(text):
        return found
    for m in _TEMPLATE_KEY_LINE.finditer(text):
        key, value = m.group(1), m.group(2)
        if (_secret_key(key) and value.lower() not in _NOT_A_VALUE
                and not _EXPRESSION_ONLY.match(value)):
            found.append((text.count("\n", 0, m.start()) + 1, "a password"))
    for pattern, label in _SECRET_VALUES:
        for m in pattern.finditer(text):
            found.append((text.count("\n", 0, m.start()) + 1, label))
    return sorted(set(found))[:MAX_PROBLEMS_PER_FILE]
