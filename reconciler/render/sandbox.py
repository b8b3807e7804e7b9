"""The Jinja environment an inventory's templates run in: Jinja's immutable sandbox, bounded.

An inventory's ``templates/*.j2`` is code from whoever opens a pull request; ``reconciler
validate`` runs it for every host in CI, and the reconcile loop unattended. Jinja's
:class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` keeps a template from reaching Python: no
attribute starting with ``_`` (so no ``''.__class__.__mro__``, no ``cycler.__init__.__globals__``),
no internals of functions or generators, no mutation of lists and dicts; what it refuses raises
:class:`~jinja2.sandbox.SecurityError`. The renderer uses it for every template, the project's
own included.

What the sandbox leaves open is spending: ``'x' * 10**9``, ``'x'.ljust(10**9)``, three nested
``range(100000)`` loops, a string doubled forty times through a ``namespace``, a macro that
writes a megabyte a hundred thousand times. :class:`BoundedSandbox`, used whenever an inventory
overrides a template, closes that; each bound is a constant of :mod:`reconciler.model.limits` and
each breach raises :class:`LimitExceeded` (a ``SecurityError``) from the template line at fault:

- **time**: every loop step, write, call, filter, test and intercepted operator checks the
  render's deadline, so none runs longer than one bounded operation past it;
- **values**: what a template builds -- an operator's, a call's or a filter's result, a list,
  tuple or dict literal, a ``~`` concatenation -- holds at most ``MAX_VALUE_SIZE`` characters and
  items, counted through nested containers; integers at most ``MAX_INT_BITS`` bits. A filter
  that returns an iterator (``map``, ``select`` ...) returns a list, counted as it fills;
- **calls**: before a method or a filter whose output can be a product of its arguments'
  sizes runs (``join``, ``replace``, ``indent``, ``center``, ``ljust``, ``batch``, ``format``
  ...: ``_MULTIPLYING_METHODS``, ``_MULTIPLYING_FILTERS``), the product of its two largest
  arguments' sizes (the method's own string among them; a number counts as its value where it
  is a width or a count) is at most ``MAX_OPERATION_SIZE``, so no single call allocates past it
  (``sep.join(items)``, ``s.replace('', big)``, ``indent(1000)`` of many lines); every other
  call's output is linear in its input and only checked after it. A format string (``%``,
  ``format``, ``str.format``) may not ask for a width over ``MAX_VALUE_SIZE`` or take one from
  its arguments;
- **output**: all one render writes, macro and ``set`` buffers included, is at most
  ``MAX_WRITTEN_BYTES``; the file it renders at most ``MAX_RENDERED_BYTES``, counted as it
  streams (:func:`render_bounded`);
- **compiling**: the inventory's templates together are at most ``MAX_TEMPLATE_TOKENS`` Jinja
  tokens (compiling 64 KiB of ``{{ [x, x, ...] }}`` takes 1.2 s and 250 MB), checked by the
  renderer before anything compiles.

The checks are compiled into each template (:class:`_BoundedCodeGenerator`, Jinja's documented
``code_generator_class`` hook): loops iterate through a counting filter, writes go through
:meth:`BoundedSandbox.charge`, literals and ``~`` through :meth:`BoundedSandbox.weighed`.
Filters whose cost is not linear in their input are not offered (``wordwrap``, ``urlize``,
``striptags``; ``random`` for its nondeterminism), nor the ``lipsum`` global; ``sum`` adds
numbers only (adding lists is quadratic). The budget of the render under way is a
:class:`contextvars.ContextVar`, so threads rendering at once each have their own.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from types import MappingProxyType
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.filters import do_sum
from jinja2.sandbox import ImmutableSandboxedEnvironment

from reconciler.model.desired import DesiredHost, NetworkInterface
from reconciler.model.inventory import Bmc, Disk, Image
from reconciler.model.limits import (
    MAX_INT_BITS,
    MAX_OPERATION_SIZE,
    MAX_RENDERED_BYTES,
    MAX_VALUE_SIZE,
    MAX_WRITTEN_BYTES,
    size_text,
)

MAX_RANGE = 100_000  # as Jinja's sandbox: range() longer than this is refused
_WITHHELD_FILTERS = frozenset(("wordwrap", "urlize", "striptags", "random"))
_WITHHELD_GLOBALS = frozenset(("lipsum",))
# The builtin methods and filters whose output can be a product of their arguments' sizes
# (every other one's is linear in its input); their arguments are checked before they run.
_MULTIPLYING_METHODS = frozenset(("join", "replace", "translate", "center", "ljust", "rjust",
                                  "zfill", "expandtabs", "to_bytes"))
_MULTIPLYING_FILTERS = frozenset(("join", "replace", "indent", "center", "batch", "slice",
                                  "format", "tojson"))
# ... and of those, where an integer argument is a width or a count: it counts as its value.
_SIZE_METHODS = frozenset(("center", "ljust", "rjust", "zfill", "expandtabs", "to_bytes"))
_SIZE_FILTERS = frozenset(("center", "indent", "batch", "slice", "tojson"))
_STEPS = "reconciler.steps"  # the loop filter; no template can name it (not an identifier)
_NUMBER_IN_FORMAT = re.compile(r"[0-9]{7,}")


class LimitExceeded(SecurityError):
    """A template asked for more than a bound of :mod:`reconciler.model.limits` allows.

    ``where``: (file, line) when the template line is known without a traceback."""

    def __init__(self, message: str, where: tuple[str, int] | None = None) -> None:
        super().__init__(message)
        self.where = where


@dataclass(frozen=True, slots=True)
class Deadline:
    """A ``time.monotonic()`` value, and what to say when it has passed."""

    at: float
    message: str


@dataclass(slots=True)
class Budget:
    """What the render under way may still spend."""

    deadline: Deadline
    written: int = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline.at:
            raise LimitExceeded(self.deadline.message)


_BUDGET: ContextVar[Budget | None] = ContextVar("reconciler_render_budget", default=None)


def _tick() -> None:
    budget = _BUDGET.get()
    if budget is not None:  # None: Jinja folding a constant while compiling
        budget.tick()


def size_of(value: Any, *, numbers: bool = False, limit: int = MAX_OPERATION_SIZE) -> int:
    """Characters of strings, plus items of containers, counted through nested containers;
    with ``numbers``, an integer counts as its value (a width or a count). Stops counting past
    ``limit``, so the cost is bounded whatever the value."""
    total = 0
    todo = [value]
    while todo:
        item = todo.pop()
        kind = type(item)
        if kind is str or kind is bytes:
            total += len(item)
        elif kind is int:
            total += abs(item) if numbers else 1
        elif kind is list or kind is tuple:
            total += 1
            todo.extend(item)
        elif kind is dict or kind is MappingProxyType:
            total += 1
            todo.extend(item.keys())
            todo.extend(item.values())
        elif kind is range:
            total += len(item)
        elif isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, list | tuple | set | frozenset):
            total += 1
            todo.extend(item)
        elif isinstance(item, Mapping):
            total += 1
            todo.extend(item.keys())
            todo.extend(item.values())
        else:
            total += 1  # a number, None, a model object, a macro: nothing to multiply
        if total > limit:
            break
    return total


def _check_value(value: Any) -> Any:
    """``value`` when it is within MAX_VALUE_SIZE (and an integer within MAX_INT_BITS)."""
    kind = type(value)
    if kind is str:
        if len(value) > MAX_VALUE_SIZE:
            raise LimitExceeded(f"a value of {len(value):,} characters: more than "
                                f"{size_text(MAX_VALUE_SIZE)}")
        return value
    if kind is int:
        if value.bit_length() > MAX_INT_BITS:
            raise LimitExceeded(f"an integer of more than {MAX_INT_BITS} bits")
        return value
    if isinstance(value, Iterator):
        return _materialized(value)
    if size_of(value, limit=MAX_VALUE_SIZE) > MAX_VALUE_SIZE:
        raise LimitExceeded(f"a value of more than {size_text(MAX_VALUE_SIZE)} "
                            "characters and items")
    return value


def _materialized(values: Iterator[Any]) -> list[Any]:
    """An iterator a filter returned, as a list, counted as it fills."""
    out: list[Any] = []
    total = 0
    for item in values:
        _tick()
        total += 1 + size_of(item, limit=MAX_VALUE_SIZE)
        if total > MAX_VALUE_SIZE:
            raise LimitExceeded(f"a sequence of more than {size_text(MAX_VALUE_SIZE)} "
                                "characters and items")
        out.append(item)
    return out


def _check_arguments(arguments: list[Any], kwargs: Mapping[str, Any], *, numbers: bool) -> None:
    """Refuse a call whose two largest arguments multiply past MAX_OPERATION_SIZE."""
    # No value a template holds is over MAX_VALUE_SIZE (only a number can be): counting stops
    # just past it, so checking costs at most that much per argument.
    sizes = sorted(size_of(a, numbers=numbers, limit=MAX_VALUE_SIZE + 1)
                   for a in (*arguments, *kwargs.values()))
    if len(sizes) >= 2 and max(sizes[-1], 1) * max(sizes[-2], 1) > MAX_OPERATION_SIZE or \
            sizes and sizes[-1] > MAX_OPERATION_SIZE:
        raise LimitExceeded("a call whose arguments could make more than "
                            f"{size_text(MAX_OPERATION_SIZE)} of output")


def _check_format(fmt: Any) -> None:
    """A format string may not ask for a width or precision over MAX_VALUE_SIZE, nor take one
    from its arguments (``%*d``, ``{:{}}``)."""
    if isinstance(fmt, bytes):
        fmt = fmt.decode("latin-1")
    if not isinstance(fmt, str):
        return
    for m in _NUMBER_IN_FORMAT.finditer(fmt):
        if int(m.group()) > MAX_VALUE_SIZE:
            raise LimitExceeded(f"a format width over {size_text(MAX_VALUE_SIZE)}")
    if "*" in fmt and re.search(r"%[#0 +-]*(\([^)]*\))?[#0 +-]*[0-9]*\*|%[^%]*\.\*", fmt):
        raise LimitExceeded("a format width taken from the arguments ('*')")
    if re.search(r"\{[^{}]*:[^{}]*\{", fmt):
        raise LimitExceeded("a format width taken from the arguments ('{:{}}')")


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    multiplying = name in _MULTIPLYING_FILTERS
    numbers = name in _SIZE_FILTERS

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _tick()
        if multiplying:
            _check_arguments(list(args), kwargs, numbers=numbers)
        if name == "format" and args:
            _check_format(args[0])
        return _check_value(func(*args, **kwargs))

    return bounded


def _ticking(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def ticking(*args: Any, **kwargs: Any) -> Any:
        _tick()
        return func(*args, **kwargs)

    return ticking


@jinja2.pass_environment
def _sum(environment: jinja2.Environment, iterable: Any, attribute: Any = None,
         start: Any = 0) -> Any:
    """Jinja's ``sum``, of numbers only: adding lists or tuples one by one is quadratic."""
    if type(start) not in (int, float):
        raise LimitExceeded("sum adds numbers only")
    return do_sum(environment, iterable, attribute, start)


@jinja2.pass_context
def _steps(context: Any, iterable: Any) -> Iterator[Any]:
    """Every loop iterates through this (compiled in): each step checks the deadline."""
    budget = _BUDGET.get()
    for item in iterable:
        if budget is not None:
            budget.tick()
        yield item


def _range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise LimitExceeded(f"a range of {len(rng):,} numbers: more than {MAX_RANGE:,}")
    return rng


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator, compiling the budget checks into the template."""

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        # Before the base class collects the filters the template uses.
        for loop in node.find_all(nodes.For):
            guarded = nodes.Filter(loop.iter, _STEPS, [], [], None, None, lineno=loop.lineno)
            guarded.set_environment(self.environment)
            loop.iter = guarded
        super().visit_Template(node, frame)

    # Every write -- output, a filter block's or a call block's result, an included template's
    # events -- is charged; writes that re-emit a charged string count twice (conservative).
    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        self.write("environment.charge(")
        super()._output_child_pre(node, frame, finalize)

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        super()._output_child_post(node, frame, finalize)
        self.write(")")

    def _output_const_repr(self, group: Any) -> str:
        return f"environment.charge({super()._output_const_repr(group)})"

    def start_write(self, frame: Frame, node: nodes.Node | None = None) -> None:
        super().start_write(frame, node)
        self.write("environment.charge(")

    def end_write(self, frame: Frame) -> None:
        self.write(")")
        super().end_write(frame)

    # What a template builds without a call: literals and ~ are weighed.
    def _weighed(self, visit: Callable[[Any, Frame], None], node: Any, frame: Frame) -> None:
        if getattr(node, "ctx", "load") != "load":  # an assignment target
            visit(node, frame)
            return
        self.write("environment.weighed(")
        visit(node, frame)
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._weighed(super().visit_List, node, frame)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        self._weighed(super().visit_Tuple, node, frame)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._weighed(super().visit_Dict, node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self._weighed(super().visit_Concat, node, frame)


# The model's frozen dataclasses and the address types they hold: every public attribute is
# data or a method that builds a new value (no mutator, no function internals), which is what the
# sandbox's generic check establishes for each access. Rendering 10,000 hosts makes 108,000
# such accesses, and the generic check would add half to the render's time.
_PLAIN_TYPES = frozenset((DesiredHost, NetworkInterface, Bmc, Disk, Image, IPv4Address,
                          IPv4Interface, IPv4Network))


class Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, answering attribute access on the model's own types directly
    (the same answer, without the generic checks). The project's templates run in this one."""

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        """Refuse at once, rather than hand back an undefined value that fails when used: a
        filter such as ``attr`` would turn that into an ordinary undefined error."""
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} "
                            "object is unsafe.")

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) in _PLAIN_TYPES and attribute[:1] != "_":
            try:
                return getattr(obj, attribute)
            except AttributeError:
                pass
        return super().getattr(obj, attribute)


class BoundedSandbox(Sandbox):
    """The immutable sandbox with every bound of the module docstring."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset(("*", "**", "%", "+"))

    def __init__(self, *, filters: Mapping[str, Callable[..., Any]] | None = None,
                 **options: Any) -> None:
        super().__init__(**options)
        table = {**self.filters, "sum": _sum, **(filters or {})}
        self.filters = {name: _bounded_filter(name, func) for name, func in table.items()
                        if name not in _WITHHELD_FILTERS}
        self.filters[_STEPS] = _steps
        tests: dict[str, Any] = dict(self.tests)
        self.tests = {name: _ticking(test) for name, test in tests.items()}
        for name in _WITHHELD_GLOBALS:
            self.globals.pop(name, None)
        self.globals["range"] = _range

    def charge(self, text: str) -> str:
        """Count a write against the render's MAX_WRITTEN_BYTES; check the deadline."""
        budget = _BUDGET.get()
        if budget is not None:
            budget.written += len(text)
            if budget.written > MAX_WRITTEN_BYTES:
                raise LimitExceeded(f"the render wrote more than {size_text(MAX_WRITTEN_BYTES)}")
            budget.tick()
        return text

    def weighed(self, value: Any) -> Any:
        _tick()
        return _check_value(value)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        if operator in ("*", "**") and isinstance(left, int) and isinstance(right, int):
            bits = left.bit_length()
            if operator == "*":
                bits += right.bit_length()
            elif abs(left) > 1 and right > 0:
                bits *= right
            if bits > MAX_INT_BITS:
                raise LimitExceeded(f"an integer of more than {MAX_INT_BITS} bits")
        elif operator == "*":
            count, seq = (left, right) if isinstance(left, int) else (right, left)
            if isinstance(count, int) and count > 0 and \
                    size_of(seq, limit=MAX_VALUE_SIZE) * count > MAX_VALUE_SIZE:
                raise LimitExceeded(f"repeating a value past {size_text(MAX_VALUE_SIZE)}")
        elif operator == "%" and isinstance(left, str | bytes):
            _check_format(left)
            _check_arguments([left, right], {}, numbers=False)
        return _check_value(super().call_binop(context, operator, left, right))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__
        _check_format(fmt)

        @functools.wraps(wrapped)
        def bounded(*args: Any, **kwargs: Any) -> str:
            _check_arguments([fmt, *args], kwargs, numbers=False)
            return str(_check_value(wrapped(*args, **kwargs)))

        return bounded

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        receiver = getattr(__obj, "__self__", None)
        if isinstance(receiver, str | bytes | int) and \
                getattr(__obj, "__name__", "") in _MULTIPLYING_METHODS:
            numbers = __obj.__name__ in _SIZE_METHODS
            mine = [] if isinstance(receiver, int) else [receiver]
            _check_arguments([*mine, *args], kwargs, numbers=numbers)
        return _check_value(super().call(__context, __obj, *args, **kwargs))


def where(exc: BaseException) -> tuple[str, int] | None:
    """(template file, line) of the innermost template frame ``exc`` passed through."""
    if isinstance(exc, LimitExceeded) and exc.where is not None:
        return exc.where
    found = None
    tb = exc.__traceback__
    while tb is not None:
        template = tb.tb_frame.f_globals.get("__jinja_template__")
        if template is not None:
            found = (template.filename or template.name or "<template>",
                     template.get_corresponding_lineno(tb.tb_lineno))
        tb = tb.tb_next
    return found


def _generator_where(gen: Any) -> tuple[str, int] | None:
    """(template file, line) where a suspended render generator yielded last."""
    found = None
    while gen is not None:
        frame = getattr(gen, "gi_frame", None)
        template = frame.f_globals.get("__jinja_template__") if frame is not None else None
        if frame is not None and template is not None:
            found = (template.filename or template.name or "<template>",
                     template.get_corresponding_lineno(frame.f_lineno))
        gen = getattr(gen, "gi_yieldfrom", None)
    return found


def render_bounded(template: jinja2.Template, context: Mapping[str, Any], *,
                   deadline: Deadline) -> str:
    """Render ``template`` of a :class:`BoundedSandbox` within a budget: ``deadline`` and the
    output limits, the rendered file counted as it streams. Errors propagate with their
    tracebacks (:func:`where` finds the template line)."""
    token = _BUDGET.set(Budget(deadline))
    try:
        gen = template.root_render_func(template.new_context(dict(context)))
        parts: list[str] = []
        size = 0
        for chunk in gen:
            size += len(chunk)
            if size > MAX_RENDERED_BYTES:
                raise LimitExceeded(f"the rendered file is over {size_text(MAX_RENDERED_BYTES)}",
                                    _generator_where(gen))
            parts.append(chunk)
        return "".join(parts)
    finally:
        _BUDGET.reset(token)
