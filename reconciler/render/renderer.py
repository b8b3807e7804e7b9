"""Render a DesiredHost into NoCloud seed files and the build request the build service takes.

Templates come from the project's ``templates/`` and, file by file, from the inventory's own
``templates/`` (same names win). Jinja runs with ``StrictUndefined``: a misspelt variable is an
error naming the template, never an empty string on a server. Every template runs in Jinja's
immutable sandbox; an inventory's templates are hostile input, so when it has any, all run in
:class:`~reconciler.render.sandbox.BoundedSandbox`, which also bounds their time, output and
memory (see that module). What the sandbox refuses is a :class:`TemplateRefused` naming the
template's file and line.

Build request (seed: "Overlay files for provisioning image" / "... for inspection image"):

- provision: meta-data, user-data, network-config; no checkin URL.
- inspect: meta-data (instance-id = the inspection id, hostname ``inspect-<id[:8]>``),
  user-data, checkin-url (``<public url>/api/v1/checkins/<id>``); no network-config, so the
  ephemeral OS runs DHCP on every NIC.
- both: ``/root/.ssh/authorized_keys`` (0600) with ``dirOverrides`` giving ``/root`` and
  ``/root/.ssh`` mode 0700 -- an appended CPIO's directory entry overwrites the existing
  directory's mode (LAB.md), and sshd refuses keys under a group/world-accessible directory --
  and the seed's ``/usr/local/bin/python -> /usr/bin/python3`` symlink.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jinja2
import yaml
from jinja2.exceptions import SecurityError

from reconciler import paths
from reconciler.errors import InputError
from reconciler.model import limits, schema
from reconciler.model.bulk import paused_gc
from reconciler.model.desired import DesiredHost, merge_user_data
from reconciler.model.inventory import TEMPLATES_DIR, Inventory
from reconciler.model.problems import Problem
from reconciler.render.sandbox import BoundedSandbox, Deadline, Sandbox, render_bounded, where

DEFAULT_PUBLIC_URL = "http://198.18.0.1:8080"
SEED_DIR = "/var/lib/cloud/seed/nocloud"
PURPOSES = ("provision", "inspect")
TEMPLATE_NAMES = ("meta-data.j2", "user-data.j2", "network-config.j2")
_UUIDISH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{7,63}$")


@dataclass(frozen=True, slots=True)
class RenderSettings:
    """Service settings rendering needs. ``ssh_keys``: the reconciler's own public keys, so it
    can always SSH into the ephemeral OS whatever the inventory says."""

    public_url: str = DEFAULT_PUBLIC_URL
    tls_artifacts: bool = False
    ssh_keys: tuple[str, ...] = ()
    templates_dir: Path | None = None  # default: the project's templates/


@dataclass(frozen=True, slots=True)
class RenderedHost:
    """Rendered text; ``meta_data``/``user_data``/``network_config`` are what the target disk's
    NoCloud seed gets (provision) -- ``network_config`` is None for inspection.
    ``build_request`` is the exact JSON body for ``POST /api/v1/builds``."""

    name: str
    purpose: str
    meta_data: str
    user_data: str
    network_config: str | None
    ephemeral_user_data: str
    checkin_url: str | None
    build_request: dict[str, Any]
    seed: Mapping[str, str] = field(default_factory=dict)


# Strings safe to write unquoted: they cannot be read back as anything but this string.
_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./-]*$")
_YAML11_WORDS = frozenset(
    "y n yes no on off true false null ~".split()
)


def _scalar(value: Any) -> str:
    if type(value) is str:  # the common case first: exact types skip the isinstance chain
        got = _STR_SCALARS.get(value)
        if got is None:
            got = _str_scalar(value)
            if len(_STR_SCALARS) >= 20_000:
                _STR_SCALARS.clear()
            _STR_SCALARS[value] = got
        return got
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return _str_scalar(str(value))


# Keys, keys and shared values (the fleet's SSH keys) repeat from host to host.
_STR_SCALARS: dict[str, str] = {}


def _str_scalar(text: str) -> str:
    if _PLAIN.match(text) and text.lower() not in _YAML11_WORDS:
        return text
    # A JSON string is a valid YAML double-quoted scalar with the same value; this is
    # json.dumps(text, ensure_ascii=False) without building an encoder per call.
    return encode_basestring(text)


# Exact types answer without the Mapping ABC's (slow) isinstance check.
_MAPPINGS = frozenset((dict, MappingProxyType))
_NOT_MAPPINGS = frozenset((str, int, float, bool, type(None), list, tuple))


def _is_mapping(value: Any) -> bool:
    kind = type(value)
    if kind in _MAPPINGS:
        return True
    return kind not in _NOT_MAPPINGS and isinstance(value, Mapping)


def _is_sequence(value: Any) -> bool:
    return isinstance(value, list | tuple)


def _emit(value: Any, indent: str, out: list[str]) -> None:
    if _is_mapping(value):
        for key, sub in value.items():
            head = f"{indent}{_scalar(key)}:"
            if type(sub) is str:  # most values: skip the container checks
                out.append(f"{head} {_scalar(sub)}\n")
            elif sub and (_is_mapping(sub) or _is_sequence(sub)):
                out.append(head + "\n")
                _emit(sub, indent + "  ", out)
            else:
                out.append(f"{head} {_empty_or_scalar(sub)}\n")
    else:
        for item in value:
            if type(item) is str:
                out.append(f"{indent}- {_scalar(item)}\n")
            elif item and _is_mapping(item):
                # "- key: value" with the rest of the mapping aligned under the key.
                sub_out: list[str] = []
                _emit(item, indent + "  ", sub_out)
                out.append(indent + "- " + sub_out[0][len(indent) + 2:])
                out.extend(sub_out[1:])
            elif item and _is_sequence(item):
                out.append(f"{indent}-\n")
                _emit(item, indent + "  ", out)
            else:
                out.append(f"{indent}- {_empty_or_scalar(item)}\n")


def _empty_or_scalar(value: Any) -> str:
    if type(value) is str:
        return _scalar(value)
    if _is_mapping(value):
        return "{}"
    if _is_sequence(value):
        return "[]"
    return _scalar(value)


def _to_yaml(value: Any) -> str:
    """Block-style YAML for plain data (mappings, lists, scalars); a fast, exact subset of what
    yaml.safe_dump writes, proven by a round-trip test against yaml.safe_load."""
    if not value or not (_is_mapping(value) or _is_sequence(value)):
        return _empty_or_scalar(value) + "\n"
    out: list[str] = []
    _emit(value, "", out)
    return "".join(out)


class _Overrides(jinja2.BaseLoader):
    """The inventory's templates, each named by its file (``templates/<name>``) in tracebacks
    and problems."""

    def __init__(self, templates: Mapping[str, str]) -> None:
        self.templates = templates

    def get_source(self, environment: jinja2.Environment,
                   template: str) -> tuple[str, str, Callable[[], bool]]:
        if template not in self.templates:
            raise jinja2.TemplateNotFound(template)
        return self.templates[template], TEMPLATES_DIR + template, lambda: True


_OPTIONS: dict[str, Any] = {"undefined": jinja2.StrictUndefined, "autoescape": False,
                            "keep_trailing_newline": True, "trim_blocks": True,
                            "lstrip_blocks": True}


@functools.lru_cache(maxsize=16)
def _environment(overrides: tuple[tuple[str, str], ...], base: str) -> jinja2.Environment:
    project = jinja2.FileSystemLoader(base)
    if not overrides:
        env = Sandbox(loader=project, **_OPTIONS)
        env.filters["to_yaml"] = _to_yaml
        return env
    env = BoundedSandbox(loader=jinja2.ChoiceLoader([_Overrides(dict(overrides)), project]),
                         filters={"to_yaml": _to_yaml}, **_OPTIONS)
    # Before anything compiles: compiling costs ~4 KB and 20 us a token (list literals, 64 KiB
    # of them: 250 MB, 1.2 s), so the inventory's templates have MAX_TEMPLATE_TOKENS together.
    tokens = 0
    for name, text in overrides:
        try:
            for _ in env.lex(text):
                tokens += 1
                if tokens > limits.MAX_TEMPLATE_TOKENS:
                    raise TemplateError(
                        TEMPLATES_DIR + name, None, "the inventory's templates together are "
                        f"over {limits.MAX_TEMPLATE_TOKENS:,} Jinja tokens: not compiled")
        except jinja2.TemplateSyntaxError:
            pass  # reported when it compiles
    return env


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


class TemplateError(InputError):
    """A template that does not compile: ``file`` (``templates/<name>`` for an inventory's
    override), ``line``, and the ``reason``."""

    def __init__(self, file: str, line: int | None, reason: str) -> None:
        super().__init__(f"{file}:{line}: {reason}" if line else f"{file}: {reason}")
        self.file, self.line, self.reason = file, line, reason


class TemplateRefused(TemplateError):
    """The sandbox refused what a template did (reached for Python internals, or went past a
    bound of :mod:`reconciler.model.limits`): a property of the template, not of a host."""


class Renderer:
    """Renders hosts of one inventory (its template overrides) with one set of settings."""

    def __init__(self, overrides: Mapping[str, str] | None = None,
                 settings: RenderSettings | None = None, *,
                 deadline: Deadline | None = None) -> None:
        """``deadline``: no render of an inventory's templates runs past it (each also has
        RENDER_SECONDS of its own)."""
        self.settings = settings or RenderSettings()
        self.overrides = dict(overrides or {})
        self.deadline = deadline
        base = self.settings.templates_dir or paths.templates_dir()
        self._env = _environment(tuple(sorted(self.overrides.items())), str(base))
        self._bounded = isinstance(self._env, BoundedSandbox)
        self._templates = {}
        for name in TEMPLATE_NAMES:
            file = f"templates/{name}" if name in self.overrides else str(base / name)
            try:
                template = self._env.get_template(name)
            except jinja2.TemplateNotFound:
                raise InputError(f"template {name} not found in {base}") from None
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(file, exc.lineno,
                                    f"template syntax error: {exc.message}") from None
            except Exception as exc:  # RecursionError, SyntaxError: nesting Jinja or Python
                if name not in self.overrides:  # cannot compile (the message is the source)
                    raise
                raise TemplateError(file, None, "template does not compile: "
                                    f"{type(exc).__name__}") from None
            # Every render copies the template's globals into a new context; Jinja keeps them
            # as a ChainMap over the environment's, which copies key by key in Python. Ours never
            # change after _environment() returns, so a flat dict holds the same names.
            template.globals = dict(template.globals)
            self._templates[name] = template

    def _render(self, name: str, context: Mapping[str, Any]) -> str:
        try:
            if self._bounded:
                deadline = Deadline(time.monotonic() + limits.RENDER_SECONDS,
                                    f"rendering took longer than the {limits.RENDER_SECONDS:g} "
                                    "s allowed")
                if self.deadline is not None and self.deadline.at < deadline.at:
                    deadline = self.deadline
                text = render_bounded(self._templates[name], context, deadline=deadline)
            else:
                text = self._templates[name].render(context)
                if len(text) > limits.MAX_RENDERED_BYTES:
                    raise InputError(f"template {name} rendered {len(text):,} characters, "
                                     "more than "
                                     f"{limits.size_text(limits.MAX_RENDERED_BYTES)}")
        except SecurityError as exc:
            file, line = where(exc) or (f"templates/{name}", None)
            raise TemplateRefused(file, line, f"refused: {exc}") from None
        except RecursionError:
            file, line = f"templates/{name}", None
            raise TemplateRefused(file, line, "refused: recursion too deep") from None
        except jinja2.UndefinedError as exc:
            raise InputError(f"template {name}: {exc.message}", hint="see docs/inventory.md "
                             "for the variables each template gets") from None
        except jinja2.TemplateError as exc:
            raise InputError(f"template {name}: {exc}") from None
        except Exception as exc:  # an override's arithmetic or filter on the wrong type
            if name not in self.overrides:
                raise
            raise InputError(f"templates/{name}: {type(exc).__name__}: {exc}") from None
        if name in self.overrides:
            # Project templates are proven by golden tests; an override is checked every time.
            # Composed, not constructed: libyaml's composer is linear in the text and nests at
            # most 1,000 deep, where building Python objects would recurse past Python's limit.
            body = text.split("\n", 1)[1] if text.startswith("#cloud-config") else text
            try:
                yaml.compose(body, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            except yaml.MarkedYAMLError as exc:  # the problem and its place, not the text
                mark = exc.problem_mark or exc.context_mark
                at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
                raise InputError(f"templates/{name} rendered invalid YAML: "
                                 f"{exc.problem or exc.context}{at}") from None
            except yaml.YAMLError:
                raise InputError(f"templates/{name} rendered invalid YAML") from None
        return text

    def render(self, host: DesiredHost, purpose: str = "provision", *,
               inspection_id: str | None = None,
               host_keys: Mapping[str, tuple[str, str]] | None = None) -> RenderedHost:
        """``host_keys``: stage ("ephemeral", "installed") -> (private, public) OpenSSH
        ed25519 host key the reconciler pins; cloud-init installs it (``ssh_keys``)."""
        if purpose not in PURPOSES:
            raise InputError(f"purpose {purpose!r} is not one of: {', '.join(PURPOSES)}")
        keys = tuple(dict.fromkeys(host.ssh_keys + self.settings.ssh_keys))
        checkin_url: str | None = None
        if purpose == "inspect":
            if not inspection_id or not _UUIDISH.match(inspection_id):
                raise InputError("inspection needs an inspection id (a UUID)",
                                 hint="pass inspection_id=str(uuid.uuid4())")
            instance_id = inspection_id
            hostname = f"inspect-{inspection_id[:8]}"
            checkin_url = f"{self.settings.public_url.rstrip('/')}/api/v1/checkins/{inspection_id}"
        else:
            instance_id = f"{host.name}-{host.digests.provision[:16]}"
            hostname = host.name
        common = {"host": host, "purpose": purpose, "hostname": hostname, "ssh_keys": list(keys)}
        meta = self._render("meta-data.j2", {**common, "instance_id": instance_id})
        base_config: dict[str, Any] = {
            "hostname": hostname,
            "preserve_hostname": False,
            # Root logs in with keys only (seed: "SSH ... key-only root access").
            "disable_root": False,
            "ssh_pwauth": False,
        }
        if keys:
            # cloud-init's schema wants at least one key ("ssh_authorized_keys: [] is too short").
            base_config["ssh_authorized_keys"] = list(keys)
        stages = {"ephemeral": dict(base_config),
                  "installed": merge_user_data(base_config, host.user_data)}
        for stage, (private, public) in (host_keys or {}).items():
            stages[stage]["ssh_keys"] = {"ed25519_private": private, "ed25519_public": public}
        ephemeral = self._render("user-data.j2", {**common, "stage": "ephemeral",
                                                  "cloud_config": stages["ephemeral"]})
        installed = self._render("user-data.j2", {**common, "stage": "installed",
                                                  "cloud_config": stages["installed"]})
        network: str | None = None
        if purpose == "provision":
            network = self._render("network-config.j2",
                                   {**common, "interfaces": list(host.interfaces)})
        files: list[dict[str, Any]] = [
            {"path": f"{SEED_DIR}/meta-data", "contentBase64": _b64(meta), "mode": "0644"},
            {"path": f"{SEED_DIR}/user-data", "contentBase64": _b64(ephemeral), "mode": "0644"},
        ]
        if network is not None:
            files.append({"path": f"{SEED_DIR}/network-config", "contentBase64": _b64(network),
                          "mode": "0644"})
        if checkin_url is not None:
            files.append({"path": f"{SEED_DIR}/checkin-url", "contentBase64": _b64(checkin_url),
                          "mode": "0644"})
        files.append({"path": "/root/.ssh/authorized_keys",
                      "contentBase64": _b64("".join(k + "\n" for k in keys)), "mode": "0600",
                      "dirMode": "0700"})
        files.append({"path": "/usr/local/bin/python", "linkTarget": "/usr/bin/python3"})
        request: dict[str, Any] = {
            "kernel": host.kernel,
            "initramfs": host.initramfs,
            "cmdline": host.cmdline,
            "architecture": host.architecture,
            "files": files,
            "dirOverrides": [{"path": "/root", "mode": "0700"},
                             {"path": "/root/.ssh", "mode": "0700"}],
            "tlsArtifacts": self.settings.tls_artifacts,
        }
        seed = {"meta-data": meta, "user-data": installed}
        if network is not None:
            seed["network-config"] = network
        return RenderedHost(host.name, purpose, meta, installed, network, ephemeral, checkin_url,
                            request, seed)

    def render_all(self, hosts: Mapping[str, DesiredHost], purpose: str = "provision", *,
                   inspection_id: str | None = None,
                   ) -> tuple[dict[str, RenderedHost], dict[str, str]]:
        """Every host (name -> rendered) and, apart, each host whose templates failed (name ->
        the error): one host's failure does not stop the others. A bulk build of results that
        live on, so the cyclic collector is paused meanwhile (see :mod:`reconciler.model.bulk`).
        """
        done: dict[str, RenderedHost] = {}
        failed: dict[str, str] = {}
        with paused_gc():
            for name, host in hosts.items():
                try:
                    done[name] = self.render(host, purpose, inspection_id=inspection_id)
                except InputError as exc:
                    failed[name] = str(exc)
        return done, failed


# Inspection renders need an id; checking templates uses this one (a valid v4 UUID).
_CHECK_ID = "00000000-0000-4000-8000-000000000000"


def template_problems(inventory: Inventory, hosts: Mapping[str, DesiredHost]) -> list[Problem]:
    """Problems of the inventory's own templates: each must compile and render every valid host
    for both purposes. Project templates are proven by golden tests, so an inventory without
    overrides has none to check (and costs nothing).

    A refusal (the sandbox's, or a limit's) is one problem on the template's line and ends the
    check: it is the template's, and a template that is slow for one host is slow for all. The
    whole check has CHECK_SECONDS, plus CHECK_SECONDS_PER_RENDER a render. A template that
    looks like it holds a secret is not rendered at all (parse_inventory reports it): the
    messages of errors rendering it could echo its text.
    """
    if not inventory.templates:
        return []
    if any(schema.template_secrets(text) for text in inventory.templates.values()):
        return []
    seconds = limits.CHECK_SECONDS + limits.CHECK_SECONDS_PER_RENDER * len(hosts) * len(PURPOSES)
    deadline = Deadline(time.monotonic() + seconds, "rendering every host took longer than the "
                        f"{seconds:g} s allowed ({limits.CHECK_SECONDS:g} s, and "
                        f"{limits.CHECK_SECONDS_PER_RENDER * 1000:g} ms a render)")
    try:
        renderer = Renderer(inventory.templates, deadline=deadline)
    except TemplateError as exc:
        return [Problem(exc.file, exc.line, "", exc.reason)]
    problems: list[Problem] = []
    for purpose in PURPOSES:
        for host in hosts.values():
            try:
                renderer.render(host, purpose, inspection_id=_CHECK_ID)
            except TemplateRefused as exc:
                return problems + [Problem(exc.file, exc.line, "", exc.reason)]
            except InputError as exc:
                problems.append(Problem(host.file, None, "", f"rendering for {purpose}: {exc}"))
    return problems


def render_host(host: DesiredHost, purpose: str = "provision", *,
                inspection_id: str | None = None,
                overrides: Mapping[str, str] | None = None,
                settings: RenderSettings | None = None) -> RenderedHost:
    """One-shot convenience: ``Renderer(overrides, settings).render(host, purpose, ...)``."""
    return Renderer(overrides, settings).render(host, purpose, inspection_id=inspection_id)


def request_digest(request: Mapping[str, Any]) -> str:
    """sha256 of a build request's canonical JSON (for change detection in tests/plans)."""
    blob = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()
