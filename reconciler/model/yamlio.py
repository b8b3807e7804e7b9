"""YAML in, with line numbers, duplicate keys and syntax errors as problems.

Simple files (nearly all of them) are read by :func:`fast_load`, a line reader for an
unambiguous subset of block YAML; anything else is parsed by libyaml (``CSafeLoader``). Lines
are needed only for files that have problems, so the node tree is composed a second time,
lazily, by :meth:`Document.line`.

Inventory files are hostile input (whoever opens a pull request writes them), so whatever the
text, parsing takes time and memory linear in its size (at most
:data:`~reconciler.model.limits.MAX_FILE_BYTES`):

- **No aliases.** An alias makes the document a graph that every reader after the parser walks
  as a tree: nine nested anchors of nine aliases each ("billion laughs") are a few hundred bytes
  of text and 10**9 nodes of data. Inventories have no use for them (profiles share settings),
  so a file with one is refused with a problem on the alias's line, before any data is built.
  The fast reader declines anchors, so only the libyaml path sees them.
- **Nesting depth** is at most :data:`~reconciler.model.limits.MAX_YAML_DEPTH`: the readers
  after the parser recurse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from reconciler.model.limits import MAX_YAML_DEPTH
from reconciler.model.problems import Problem, dotted

_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _CheckingLoader(_Loader):  # type: ignore[misc]
    """Safe loader that records duplicate mapping keys instead of silently keeping the last."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicate_lines: list[int] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                key_node, yaml.ScalarNode
            ):
                continue
            if key_node.value in seen:
                self.duplicate_lines.append(key_node.start_mark.line + 1)
            seen.add(key_node.value)
        result: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return result


@dataclass(slots=True)
class Document:
    """A parsed YAML file: its data (None if unparsable) and its problems."""

    file: str
    text: str
    data: Any = None
    problems: list[Problem] = field(default_factory=list)
    nodes: int = 0  # mappings, lists and scalars (keys too): what the data costs to hold
    _lines: dict[tuple[str | int, ...], int] | None = None

    def line(self, path: tuple[str | int, ...]) -> int | None:
        """Line (1-based) of the node at ``path``, or of its nearest existing ancestor."""
        lines = self._lines
        if lines is None:
            global _recent_lines
            recent = _recent_lines
            if recent is not None and recent[0] is self.text:
                lines = recent[1]
            else:
                lines = _line_map(self.text)
                if self.nodes <= _KEEP_LINES:
                    self._lines = lines
                else:
                    _recent_lines = (self.text, lines)
        while path:
            if path in lines:
                return lines[path]
            path = path[:-1]
        return lines.get((), None)

    def problem(self, path: tuple[str | int, ...], message: str) -> Problem:
        return Problem(self.file, self.line(path), dotted(path), message)


# A line map holds a path per node. A big document's is kept only until another big document
# needs one (problems come in bursts, file by file): all of them at once would be most of what
# an inventory of dense files makes validation hold.
_KEEP_LINES = 2_000
_recent_lines: tuple[str, dict[tuple[str | int, ...], int]] | None = None


def forget_lines() -> None:
    """Drop the line map kept for the last big document (at the end of a parse)."""
    global _recent_lines
    _recent_lines = None


def parse(file: str, raw: bytes) -> Document:
    """Parse one YAML file; syntax errors and duplicate keys become problems."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Document(file, "", problems=[Problem(file, None, "", f"not UTF-8: {exc.reason}")])
    try:
        data, nodes = _fast_load(text)
    except ValueError:  # an integer past Python's 4,300 digits: libyaml's path reports it
        data, nodes = _NOT_SIMPLE, 0
    if data is not _NOT_SIMPLE:
        return Document(file, text, data, nodes=nodes)
    doc = Document(file, text)
    loader = _CheckingLoader(text)
    try:
        node = loader.get_single_node()
        refusal = None if node is None else _refusal(node, text, doc)
        if refusal is not None:
            line, message = refusal
            doc.problems.append(Problem(file, line, "", message))
            return doc
        doc.data = None if node is None else _build(node, loader, set())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "invalid YAML"
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        doc.problems.append(Problem(file, line, "", f"YAML syntax error: {what}", col))
        doc.data = None
        return doc
    except yaml.YAMLError as exc:
        doc.problems.append(Problem(file, None, "", f"YAML error: {exc}"))
        return doc
    except Exception as exc:  # PyYAML's constructors, on hostile input
        # A value its type's constructor refuses: a date 2024-13-45, an integer of more than
        # the 4,300 digits Python converts, an empty !!int (IndexError). Never a traceback.
        what = str(exc).split(";")[0]
        if not isinstance(exc, ValueError):
            what = f"{type(exc).__name__}: {what}"
        doc.problems.append(Problem(file, None, "", f"YAML value that cannot be read: {what}"))
        doc.data = None
        return doc
    finally:
        loader.dispose()
    if loader.duplicate_lines:
        dup_paths = _duplicate_paths(text)
        for line in sorted(set(loader.duplicate_lines)):
            path = dup_paths.get(line, ())
            doc.problems.append(Problem(file, line, dotted(path), "duplicate key"))
    return doc


def _refusal(root: yaml.Node, text: str, doc: Document) -> tuple[int | None, str] | None:
    """(line, message) when the composed document uses an alias or nests too deep, else None;
    counts ``doc.nodes``.

    One walk with an explicit stack (no recursion), visiting each node once: libyaml composes an
    alias as a second reference to the anchored node, so the first node met twice is one.
    """
    seen: set[int] = set()
    todo: list[tuple[yaml.Node, int]] = [(root, 0)]
    while todo:
        doc.nodes += 1
        node, depth = todo.pop()
        if id(node) in seen:
            return _alias_line(text, node), "YAML aliases are not allowed"
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            continue
        if depth == MAX_YAML_DEPTH:
            return (node.start_mark.line + 1,
                    f"nested deeper than {MAX_YAML_DEPTH} levels of mappings and lists")
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                todo.append((value_node, depth + 1))
                todo.append((key_node, depth + 1))
        else:
            todo.extend((item, depth + 1) for item in reversed(node.value))
    return None


def _alias_line(text: str, node: yaml.Node) -> int:
    """Line of the first alias in ``text`` (the node it names, if the scanner cannot say)."""
    try:
        for token in yaml.scan(text, Loader=_Loader):
            if isinstance(token, yaml.AliasToken):
                return int(token.start_mark.line) + 1
    except yaml.YAMLError:
        pass
    return int(node.start_mark.line) + 1


_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
_DECIMAL = re.compile(r"^(0|[1-9][0-9]*)$")


def _build(node: yaml.Node, loader: Any, stack: set[int]) -> Any:
    """Python data from a composed node: the common tags directly, anything unusual (floats,
    timestamps, merge keys, custom tags, recursive anchors) through the safe constructor.
    Same result as ``construct_document`` -- about twice as fast, which matters at 10,000 files.
    """
    if isinstance(node, yaml.ScalarNode):
        tag = node.tag
        if tag == _STR:
            return node.value
        if tag == _NULL:
            return None
        if tag == _BOOL:
            return loader.bool_values[node.value.lower()]
        if tag == _INT and _DECIMAL.match(node.value):
            return int(node.value)
        return loader.construct_object(node, deep=True)
    if id(node) in stack:
        return loader.construct_object(node, deep=True)
    stack.add(id(node))
    try:
        if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ:
            return [_build(item, loader, stack) for item in node.value]
        if isinstance(node, yaml.MappingNode) and node.tag == _MAP and not any(
            k.tag == _MERGE for k, _ in node.value
        ):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = _build(key_node, loader, stack)
                try:
                    if key in out:
                        loader.duplicate_lines.append(key_node.start_mark.line + 1)
                except TypeError:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        "found an unhashable key", key_node.start_mark) from None
                out[key] = _build(value_node, loader, stack)
            return out
        return loader.construct_object(node, deep=True)
    finally:
        stack.discard(id(node))


def _compose(text: str) -> yaml.Node | None:
    try:
        node: yaml.Node | None = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return None
    return node


def _walk(
    node: yaml.Node, path: tuple[str | int, ...], out: dict[tuple[str | int, ...], int]
) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            sub = (*path, key_node.value)
            out.setdefault(sub, key_node.start_mark.line + 1)
            _walk(value_node, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            sub = (*path, index)
            out[sub] = item.start_mark.line + 1
            _walk(item, sub, out)


def _line_map(text: str) -> dict[tuple[str | int, ...], int]:
    out: dict[tuple[str | int, ...], int] = {}
    node = _compose(text)
    if node is not None:
        out[()] = node.start_mark.line + 1
        _walk(node, (), out)
    return out


def _duplicate_paths(text: str) -> dict[int, tuple[str | int, ...]]:
    """Line of each repeated key -> its path (for the message)."""
    found: dict[int, tuple[str | int, ...]] = {}

    def walk(node: yaml.Node, path: tuple[str | int, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue
                if key_node.value in seen:
                    found[key_node.start_mark.line + 1] = (*path, key_node.value)
                seen.add(key_node.value)
                walk(value_node, (*path, key_node.value))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, (*path, index))

    node = _compose(text)
    if node is not None:
        walk(node, ())
    return found


# --- Fast path -------------------------------------------------------------------------------
# Almost every inventory file is plain block YAML: `key: value` lines, `- ` items, quoted
# strings without escapes, one-line flow lists. For those a line-by-line reader in Python is
# several times faster than libyaml's composer (which builds a node and resolves a tag in
# Python for every scalar). It accepts only a subset whose meaning is unambiguous and returns
# _NOT_SIMPLE for anything else -- anchors, tags, block scalars, escapes, continuation lines,
# flow mappings, tabs, odd characters, duplicate keys, non-string keys, any scalar that is not
# a string, a decimal integer, a boolean or null -- and the file goes through libyaml as before.
# Tags are resolved by PyYAML's own implicit resolver table, exactly as the loader does.


class _NotSimple(Exception):
    pass


_NOT_SIMPLE: Any = object()
# Characters libyaml accepts, minus tab, CR and the YAML 1.1 line breaks (NEL, LS, PS), which
# the line reader does not interpret.
_ODD = re.compile("[^\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd"
                  "\U00010000-\U0010ffff]")
_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*):(?: +(.*))?$")
# A plain scalar in block context: no indicator first, ': ' and ' #' never inside, no brackets.
_PLAIN_BLOCK = re.compile(r"(?:[A-Za-z0-9_./~(+$=^]|[-?:](?=\S))"
                          r"(?:[^\s:#\[\]{}]|:(?=\S)|(?<=\S)#| +(?=[^\s#]))*")
_PLAIN_SIMPLE = re.compile(r"[A-Za-z0-9_./~(+$=^][A-Za-z0-9_./~()+$=^@,-]*")
_DOUBLE = re.compile(r'"([^"\\]*)"')
_SINGLE = re.compile(r"'([^']*)'")
_FLOW_ITEM = re.compile(r'\s*(?:"([^"\\]*)"|\'([^\']*)\'|([A-Za-z0-9_./~(+$=^][^,\[\]{}#:"\']*?))'
                        r'\s*(,|\])')


def _plain(value: str) -> Any:
    """A plain scalar's value, resolved as PyYAML resolves it; only str, decimal int, bool and
    null are taken here. Memoized: keys and most values repeat from file to file."""
    got = _RESOLVED.get(value, _NOT_SIMPLE)
    if got is _NOT_SIMPLE:
        got = _resolve(value)
        if len(_RESOLVED) >= _RESOLVED_MAX:
            _RESOLVED.clear()
        _RESOLVED[value] = got
    if got is _REFUSED:
        raise _NotSimple
    return got


_REFUSED: Any = object()
_RESOLVED: dict[str, Any] = {}
_RESOLVED_MAX = 20_000


def _resolve(value: str) -> Any:
    table = _CheckingLoader.yaml_implicit_resolvers  # what the loader itself would use
    tag = _STR
    for candidate, regexp in table.get(value[0], []) + table.get(None, []):
        if regexp.match(value):
            tag = candidate
            break
    if tag == _STR:
        return value
    if tag == _NULL:
        return None
    if tag == _BOOL:
        return _BOOL_VALUES[value.lower()]
    if tag == _INT and _DECIMAL.match(value):
        return int(value)
    return _REFUSED


_BOOL_VALUES: dict[str, bool] = yaml.constructor.SafeConstructor.bool_values


def _uncomment(rest: str) -> str:
    cut = rest.find(" #")
    return (rest if cut < 0 else rest[:cut]).rstrip(" ")


def _scalar(rest: str) -> Any:
    """The value after `key: ` or `- ` on one line (comment allowed after it)."""
    first = rest[0]
    if first == '"' or first == "'":
        m = (_DOUBLE if first == '"' else _SINGLE).match(rest)
        if m is None:
            raise _NotSimple
        tail = rest[m.end():].lstrip(" ")
        if tail and tail[0] != "#" or (tail and rest[m.end()] != " "):
            raise _NotSimple
        return m.group(1)
    if first == "[":
        return _flow_list(rest)
    if _PLAIN_SIMPLE.fullmatch(rest):  # no spaces, colons or '#': nothing to cut or check
        return _plain(rest)
    text = _uncomment(rest)
    if not _PLAIN_BLOCK.fullmatch(text):
        raise _NotSimple
    return _plain(text)


def _flow_list(rest: str) -> list[Any]:
    out: list[Any] = []
    pos = 1
    if rest[1:].lstrip(" ").startswith("]"):
        pos = rest.index("]") + 1
    else:
        while True:
            m = _FLOW_ITEM.match(rest, pos)
            if m is None:
                raise _NotSimple
            double, single, plain = m.group(1, 2, 3)
            if plain is not None:
                out.append(_plain(plain))
            else:
                out.append(double if double is not None else single)
            pos = m.end()
            if m.group(4) == "]":
                break
            if rest[pos:].lstrip(" ").startswith("]"):
                raise _NotSimple  # a trailing comma
    tail = rest[pos:]
    if tail.strip(" ") and not (tail[0] == " " and tail.lstrip(" ").startswith("#")):
        raise _NotSimple
    return out


# A significant line: indentation, then either `key:` with what follows it, or other content;
# trailing spaces dropped. Blank lines and comment lines do not match.
_LINE = re.compile(r"^( *)(?:([A-Za-z_][A-Za-z0-9_.-]*):(?: +([^\n]*[^ \n]))?"
                   r"|([^ #\n](?:[^\n]*[^ \n])?)) *$", re.M)


def _lines(text: str) -> list[list[Any]]:
    """Significant lines as [indent, key, rest, content]: key and rest ("" if none) for a
    `key: rest` line, content for any other line."""
    return [[len(pad), key, rest, content] for pad, key, rest, content in _LINE.findall(text)]


def _is_item(line: list[Any]) -> bool:
    content: str = line[3]
    return content.startswith("- ") or content == "-"


def _block(lines: list[list[Any]], i: int, indent: int) -> tuple[Any, int]:
    if _is_item(lines[i]):
        return _sequence(lines, i, indent)
    return _mapping(lines, i, indent)


# Every level of nesting the line reader takes indents a mapping further (a list under a key
# may share the key's column, its "- key:" items are two further): declining mappings from this
# column on keeps what it returns within MAX_YAML_DEPTH levels, and its recursion shallow.
_DEEPEST = MAX_YAML_DEPTH // 2 - 1


def _mapping(lines: list[list[Any]], i: int, indent: int) -> tuple[dict[str, Any], int]:
    if indent >= _DEEPEST:
        raise _NotSimple  # libyaml reads it, and the depth limit is applied there
    out: dict[str, Any] = {}
    n = len(lines)
    while i < n:
        depth, name, rest, content = lines[i]
        if depth != indent:
            break
        if not name:
            if content.startswith("- ") or content == "-":
                break  # a sequence at the same indent as its parent key's siblings ends here
            raise _NotSimple
        key = _plain(name)
        if type(key) is not str or key in out:
            raise _NotSimple
        i += 1
        if rest and rest[0] != "#":
            out[key] = _plain(rest) if _PLAIN_SIMPLE.fullmatch(rest) else _scalar(rest)
            if i < n and lines[i][0] > indent:
                raise _NotSimple  # a continuation line, or an error: libyaml decides
        elif i < n and lines[i][0] > indent:
            out[key], i = _block(lines, i, lines[i][0])
        elif i < n and lines[i][0] == indent and _is_item(lines[i]):
            out[key], i = _sequence(lines, i, indent)
        else:
            out[key] = None
    return out, i


def _sequence(lines: list[list[Any]], i: int, indent: int) -> tuple[list[Any], int]:
    out: list[Any] = []
    n = len(lines)
    while i < n and lines[i][0] == indent and lines[i][3].startswith("- "):
        inner = lines[i][3][2:]
        item = inner.lstrip(" ")
        if not item or item[0] in "-#":
            raise _NotSimple
        m = _KEY.match(item)
        if m is not None:
            # "- key: value": a mapping whose keys line up with this first key.
            col = indent + 2 + len(inner) - len(item)
            lines[i] = [col, m.group(1), m.group(2) or "", ""]
            value, i = _mapping(lines, i, col)
            out.append(value)
            if i < n and lines[i][0] > indent:
                raise _NotSimple
        else:
            out.append(_scalar(item))
            i += 1
            if i < n and lines[i][0] > indent:
                raise _NotSimple
    if i < n and lines[i][0] == indent and lines[i][3] == "-":
        raise _NotSimple
    return out, i


def fast_load(text: str) -> Any:
    """The data of a simple document, or ``_NOT_SIMPLE`` (then use libyaml)."""
    return _fast_load(text)[0]


def _fast_load(text: str) -> tuple[Any, int]:
    """:func:`fast_load`, and how many nodes the data has at most (a line is a key and a
    value; a comma one more item)."""
    if _ODD.search(text):
        return _NOT_SIMPLE, 0
    lines = _lines(text)
    if not lines:
        return _NOT_SIMPLE, 0
    try:
        data, end = _block(lines, 0, lines[0][0])
    except (_NotSimple, IndexError):
        return _NOT_SIMPLE, 0
    if end != len(lines):
        return _NOT_SIMPLE, 0
    return data, 2 * len(lines) + text.count(",")
