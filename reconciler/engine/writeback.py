"""Commit-back: inspection reports written into the inventory repository (issue 14, part 4).

:class:`ReportWriter` is the only writer of ``<path>/inspection/``. It keeps a clone of its own
under the data directory (``<data dir>/writeback``), separate from the read-only mirror of
:mod:`reconciler.engine.source`, and for each batch of reports (``{server: text or None}``):

1. fetches the watched branch, the push branch and the lease ref;
2. takes or renews the lease (below) -- or stops with a :class:`PermanentError` naming the
   other reconciler that holds it;
3. writes the batch's files on the push branch's head (the watched branch's the first time):
   whole files, so writing them on any head is exact. When something differs it makes ONE
   commit naming the servers and what changed, the time and this instance
   (``Reconciler-Instance:`` trailer); an unchanged batch makes no commit;
4. pushes it without force. A rejected push (someone pushed meanwhile) goes back to 1: fetch,
   write the same files again on the new head, commit, push -- a few quick attempts with a
   small random pause between them, then a :class:`TemporaryError` so the engine backs off and
   recomputes the batch later. Flux's image-automation-controller does no in-process retry and
   force-pushes a separate push branch (``../shared/ENGINE-ANCHORS.md`` section 2); this writer
   never passes ``--force``, a ``+`` refspec or ``--force-with-lease`` to a push, so git's own
   fast-forward check guarantees that no commit, its own or anyone's, is ever dropped.

**A bare clone and one fast-import.** The commit is made by ``git fast-import`` from the
reports' bytes on top of the fetched head: nothing is checked out, so a symlink committed in
place of ``inspection/`` cannot send a write anywhere on this machine (the tree entries on the
way are checked: directories must be directories, a report a regular file), and the time from
the fetch to the push -- the window in which someone else's push makes ours be rejected -- is
three local git commands, as short as a person's ``git commit && git push`` (a work tree's
reset, add, diff, write-tree and commit-tree made it twice as long, and a tight-loop pusher
starved the writer).

**Only ``inspection/``.** Server names must be plain file names (the server schema's name
pattern), and the commit's only changes are the batch's ``<path>/inspection/<name>.yaml``.

**The lease** guards against two reconcilers writing one branch. It is a ref on the remote
(default ``refs/reconciler/lease/<push branch>``, setting ``lease_ref``) pointing at a commit
with an empty tree whose message names the holder (this instance's id, kept in
``<data dir>/instance-id``, and the host name) and when the lease expires. It is taken or
renewed by pushing a new lease commit whose parent is the current one: git refuses a
non-fast-forward update, so two reconcilers racing for it cannot both win (compare-and-swap
from git itself, no server support needed beyond accepting the ref). Another holder's
unexpired lease stops the write with an error naming it; an expired one is taken over. A
lease lasts ``lease_ttl`` seconds from the holder's last renewal and is renewed by a write that
finds less than half of it left. A ref rather than a file on the branch: a lease file would put
a commit on the branch at every renewal and make every reader of the branch see it. Plain
git and GitHub accept custom refs; a host that accepts only branches and tags (Gitea refused
``refs/notes/*``, go-gitea/gitea#16688; GitLab hides some namespaces) gets ``lease_ref:
refs/heads/reconciler-lease/<branch>``, an ordinary branch -- the error says so.

**Credentials** come from a reference, never from the repository, argv or a log line: an SSH
deploy key's path (``GIT_SSH_COMMAND``) or an HTTPS token from a credentials reference
(``RECONCILER_CRED_<REF>`` or ``<secrets dir>/<ref>``, as :mod:`reconciler.adapters.secrets`
resolves a BMC's), handed to git as an ``Authorization`` header through ``GIT_CONFIG_*``
environment variables, scoped to the repository's own scheme, host and port (a redirect to
another host never receives it). The token is registered with
:func:`reconciler.log.register_secret`, so a remote that echoes it in an error sees it masked.
The operator's git configuration is never read (``GIT_CONFIG_GLOBAL=/dev/null``,
``GIT_CONFIG_NOSYSTEM=1``); author and committer are explicit.
"""

from __future__ import annotations

import base64
import logging
import os
import random
import re
import shlex
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from reconciler.adapters import secrets
from reconciler.adapters.git import blob_id
from reconciler.adapters.run import run
from reconciler.adapters.store import write_atomic
from reconciler.errors import InputError, PermanentError, TemporaryError, ToolFailed
from reconciler.log import redact, register_secret
from reconciler.model.inspection import INSPECTION_DIR

LOG = logging.getLogger(__name__)

DEFAULT_AUTHOR = "reconciler <reconciler@localhost>"
LEASE_PREFIX = "refs/reconciler/lease/"
INSTANCE_FILE = "instance-id"
ATTEMPTS = 5  # pushes of one batch before giving the engine a TemporaryError
TRAILER = "Reconciler-Instance"
SUBJECT_SERVERS = 4  # names in the subject line; the body lists them all
# The server schema's name pattern (schemas/inventory/server.schema.json): a plain file name.
_SERVER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_AUTHOR = re.compile(r"^([^<>\n]*[^<>\s])\s*<([^<>\s]+@[^<>\s]+)>$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
# What ``git push --porcelain`` says of a ref when someone else moved it first: worth fetching
# and trying again. ``failed to update ref``/``failed to lock``: the remote's own
# compare-and-swap lost a race that began after it advertised the old value.
_RETRY_REASONS = ("fetch first", "non-fast-forward", "failed to update ref", "failed to lock",
                  "cannot lock ref", "stale info", "already exists")
# Local names of what is fetched: fixed, one writer per work clone.
_WATCHED, _PUSH, _LEASE = "refs/writeback/watched", "refs/writeback/push", "refs/writeback/lease"
_NEW = "refs/writeback/new"  # the commit being pushed
TREE_MODE, REPORT_MODE, FILE_MODES = "040000", "100644", ("100644", "100755")
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class Written:
    """What :meth:`ReportWriter.write` did: ``commit`` None means nothing to do."""

    commit: str | None
    branch: str
    servers: tuple[str, ...] = ()  # whose files the commit changed
    attempts: int = 1

    @property
    def nothing_to_do(self) -> bool:
        return self.commit is None


@dataclass(frozen=True, slots=True)
class Lease:
    commit: str
    holder: str  # instance id
    host: str
    expires: float  # unix time

    def describe(self) -> str:
        return f"reconciler {self.holder} on {self.host}"


# -- settings helpers (also used by reconciler.engine.config's parsers) ----------------------


def parse_author(text: str) -> tuple[str, str]:
    """``"Name <email>"`` -> (name, email), or :class:`InputError`."""
    match = _AUTHOR.fullmatch(text.strip())
    if match is None:
        raise InputError(f"{text!r} is not 'Name <email>'",
                         hint=f"for example {DEFAULT_AUTHOR!r}")
    return match.group(1).strip(), match.group(2)


def check_ref(text: str) -> str:
    """A full ref name the remote can hold (git's check-ref-format rules, the common part)."""
    bad = (not text.startswith("refs/") or text.endswith(("/", ".", ".lock"))
           or any(c in text for c in " ~^:?*[\\\x7f") or ".." in text or "//" in text
           or "@{" in text or _CONTROL.search(text) is not None
           or any(part.startswith(".") for part in text.split("/")))
    if bad:
        raise InputError(f"{text!r} is not a ref name",
                         hint="a full ref like refs/reconciler/lease/main")
    return text


def instance_id(data_dir: Path) -> str:
    """This reconciler's id, made once and kept in the data directory (the lease's holder)."""
    path = data_dir / INSTANCE_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeError) as exc:
        raise PermanentError(f"{path}: cannot read the instance id: {exc}") from None
    if re.fullmatch(r"[0-9a-f]{32}", text):
        return text
    data_dir.mkdir(parents=True, exist_ok=True)
    text = uuid.uuid4().hex
    write_atomic(path, (text + "\n").encode())
    return text


def ssh_env(key: Path) -> dict[str, str]:
    """git's environment to use a deploy key (its path is not a secret; its content is)."""
    command = shlex.join(["ssh", "-i", os.fspath(key), "-o", "IdentitiesOnly=yes",
                          "-o", "BatchMode=yes"])
    return {"GIT_SSH_COMMAND": command}


def token_env(url: str, username: str, token: str) -> dict[str, str]:
    """git's environment to send ``username:token`` as HTTP basic authentication to ``url``'s
    scheme://host:port only, through ``GIT_CONFIG_*`` (never argv, never the URL)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InputError(f"git_token: the repository {url!r} is not an https:// URL",
                         hint="a token is for HTTPS remotes; use git_ssh_key for SSH ones")
    if parts.scheme == "http" and parts.hostname not in _LOCAL_HOSTS:
        raise InputError(f"git_token: {url!r} is plain http: the token would cross the "
                         "network in clear", hint="use an https:// URL")
    netloc = parts.netloc.rpartition("@")[2]  # a user name in the URL is not part of the scope
    header = "Authorization: Basic " + base64.b64encode(
        f"{username}:{token}".encode()).decode("ascii")
    register_secret(token)
    register_secret(header.rpartition(" ")[2])
    return {"GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": f"http.{parts.scheme}://{netloc}/.extraHeader",
            "GIT_CONFIG_VALUE_0": header}


def resolve_token(ref: str, directory: Path | None = None,
                  env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(username, token) from a credentials reference: ``RECONCILER_CRED_<REF>`` or the file
    ``<secrets dir>/<ref>``, holding ``username:token`` or a bare token (then the user name is
    ``x-access-token``: GitHub's for app tokens; GitLab and Gitea take any name with a token)."""
    text, source = secrets.lookup(ref, directory=directory, env=env, setting="git_token",
                                  form="TOKEN (or USER:TOKEN)", error=InputError)
    text = text.strip()
    username, sep, token = text.partition(":")
    if not sep:
        username, token = "x-access-token", text
    if not token or not username or "\n" in text:
        raise InputError(f"git_token: {source}: expected one line, TOKEN or USER:TOKEN")
    register_secret(token)
    return username, token


def auth_env(settings: Any, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """git's credentials environment for ``settings.repo`` (a deploy key or a token, or
    nothing): the same for every git command that talks to the remote (the read-only mirror
    too)."""
    if settings.git_ssh_key is not None and settings.git_token:
        raise InputError("git_ssh_key and git_token are both set",
                         hint="an SSH URL takes the key, an https:// URL the token")
    if settings.git_ssh_key is not None:
        key = Path(settings.git_ssh_key)
        if not key.is_file():
            raise InputError(f"git_ssh_key: {key} is not a file",
                             hint="the path of the deploy key's private half, mode 0600")
        return ssh_env(key)
    if settings.git_token:
        username, token = resolve_token(settings.git_token, settings.secrets_dir, env)
        return token_env(settings.repo, username, token)
    return {}


# -- the writer -------------------------------------------------------------------------------


class _Raced(Exception):
    """The lease moved under us: fetch and look again."""


class ReportWriter:
    def __init__(self, url: str, branch: str, path: str, work_dir: Path, *,
                 push_branch: str = "", author: str = DEFAULT_AUTHOR, instance: str = "",
                 host: str = "", auth: Mapping[str, str] | None = None,
                 lease_ttl: float = 600.0, lease_ref: str = "", timeout: float = 60.0,
                 attempts: int = ATTEMPTS, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 jitter: Callable[[], float] = random.random) -> None:
        prefix = path.strip("/")
        if prefix.startswith(".") or "/." in f"/{prefix}" or "//" in prefix \
                or _CONTROL.search(prefix) or any(c in prefix for c in '"\\'):
            raise InputError(f"path: {path!r} must be a directory inside the repository",
                             hint="no '..', no leading dot, no quotes or control characters")
        self.url = url
        self.branch = branch
        self.push_branch = push_branch or branch
        self.report_dir = f"{prefix}/{INSPECTION_DIR}" if prefix else INSPECTION_DIR
        self.work_dir = work_dir
        name, email = parse_author(author)
        self.instance = instance or uuid.uuid4().hex
        self.host = host or socket.gethostname()
        self.lease_ttl = lease_ttl
        self.lease_ref = check_ref(lease_ref or LEASE_PREFIX + self.push_branch)
        self.timeout = timeout
        self.attempts = attempts
        self.clock, self.sleep, self.jitter = clock, sleep, jitter
        self.env = {
            "GIT_CONFIG_GLOBAL": "/dev/null",  # never the operator's ~/.gitconfig
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",  # never wait for a password
            "GIT_LITERAL_PATHSPECS": "1",  # a '*' in ``path`` is a character, not a glob
            "HOME": "/nonexistent",
            "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email,
            **(auth or {}),
        }
        self._lock = threading.Lock()
        self._ready = False
        # fast-import only moves its ref forward: after a commit that did not land, the ref is
        # deleted before the next one is made.
        self._scratch_stale = True

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> ReportWriter:
        """The writer ``reconciler run`` uses: everything checked (key file, token reference,
        author) before the first git command."""
        return cls(settings.repo, settings.branch, settings.path,
                   settings.data_dir / "writeback", push_branch=settings.push_branch,
                   author=settings.git_author, instance=instance_id(settings.data_dir),
                   auth=auth_env(settings), lease_ttl=settings.lease_ttl,
                   lease_ref=settings.lease_ref, timeout=settings.git_timeout, **kwargs)

    # -- the one public operation ----------------------------------------------------------

    def write(self, changes: Mapping[str, str | None],
              summary: Mapping[str, str] | None = None) -> Written:
        """Commit and push ``changes`` (server -> report text, None = remove the report) as one
        commit; ``summary``: server -> one line saying what changed, for the message."""
        for name, text in changes.items():
            if not isinstance(name, str) or not _SERVER.fullmatch(name):
                raise PermanentError(f"inspection report for {name!r}: not a plain server name; "
                                     "nothing written")
            if text is not None and not isinstance(text, str):
                raise PermanentError(f"inspection report for {name}: expected text, got "
                                     f"{type(text).__name__}")
        if not changes:
            return Written(None, self.push_branch, (), 0)
        with self._lock:
            return self._write(changes, summary or {})

    def _write(self, changes: Mapping[str, str | None], summary: Mapping[str, str]) -> Written:
        self._prepare()
        last = ""
        for attempt in range(1, self.attempts + 1):
            if attempt > 1:
                # Desynchronise from whoever pushed meanwhile: 0-50 ms, growing per attempt.
                self.sleep(self.jitter() * 0.05 * attempt)
            if self._scratch_stale:  # before the fetch: not in the fetch -> push window
                self._git("update-ref", "-d", _NEW)
                self._scratch_stale = False
            heads = self._fetch()
            try:
                self._hold(heads.get(_LEASE))
            except _Raced:
                last = f"the lease {self.lease_ref} moved"
                continue
            base = (heads.get(_PUSH) or heads[_WATCHED])[0]
            self._scratch_stale = True  # until a push lands what fast-import makes
            made = self._commit(base, changes, summary)
            if made is None:
                LOG.info("inspection reports (%s) already on %s: nothing to do",
                         ", ".join(sorted(changes)), self.push_branch)
                return Written(None, self.push_branch, (), attempt)
            commit, servers = made
            pushed, reason = self._push(commit, f"refs/heads/{self.push_branch}")
            if pushed:
                self._scratch_stale = False  # the next head descends from it
                LOG.info("inspection reports (%s) committed as %s and pushed to %s",
                         ", ".join(servers), commit[:12], self.push_branch)
                return Written(commit, self.push_branch, servers, attempt)
            last = reason
            LOG.info("push of %s to %s rejected (%s); fetching and writing again (%d/%d)",
                     commit[:12], self.push_branch, reason, attempt, self.attempts)
        raise TemporaryError(
            f"inspection reports ({', '.join(sorted(changes))}) not pushed to {self.push_branch} "
            f"of {redact(self.url)} after {self.attempts} attempts: {last}",
            delay=30.0, hint="another writer keeps moving the branch; the batch is kept")

    def release(self) -> None:
        """Give the lease up (on a clean shutdown), if this instance holds it."""
        with self._lock:
            self._prepare()
            held = self._fetch().get(_LEASE)
            lease = self._read_lease(*held) if held else None
            if lease is None or lease.holder != self.instance:
                return
            self._push(self._lease_commit(lease.commit, self.clock()), self.lease_ref)

    # -- git -------------------------------------------------------------------------------

    def _git(self, *args: str, input: bytes | None = None, cwd: Path | None = None) -> str:
        try:
            proc = run(["git", *args], timeout=self.timeout, env=self.env, input=input,
                       cwd=cwd or self.work_dir)
        except ToolFailed as exc:
            raise TemporaryError(f"commit-back to {redact(self.url)}: {redact(str(exc))}",
                                 delay=self.timeout) from None
        return proc.stdout.decode(errors="replace")

    def _prepare(self) -> None:
        """Make the clone once (under a temporary name, renamed when complete)."""
        if self._ready:
            return
        if not (self.work_dir / "HEAD").exists():
            partial = self.work_dir.with_name(self.work_dir.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            self._git("init", "-q", "--bare", str(partial), cwd=partial)
            # A gc the writer starts finishes within its timeout, not behind its back.
            self._git("config", "gc.autoDetach", "false", cwd=partial)
            self._git("remote", "add", "origin", self.url, cwd=partial)
            partial.rename(self.work_dir)
        elif self._git("config", "--get", "remote.origin.url").strip() != self.url:
            self._git("remote", "set-url", "origin", self.url)
        self._ready = True

    def _wanted(self) -> dict[str, str]:
        want = {_WATCHED: f"refs/heads/{self.branch}", _LEASE: self.lease_ref}
        if self.push_branch != self.branch:
            want[_PUSH] = f"refs/heads/{self.push_branch}"
        return want

    def _fetch(self) -> dict[str, tuple[str, str]]:
        """Fetch the branches and the lease: local name -> (commit, message body), for those
        that exist."""
        want = self._wanted()

        def fetch(names: Sequence[str]) -> None:
            # ``+`` here only lets the local copies follow the remote; pushes never force.
            self._git("fetch", "-q", "--no-tags", "--no-write-fetch-head", "origin",
                      *(f"+{want[n]}:{n}" for n in names))

        try:
            fetch(list(want))
        except TemporaryError as first:
            # One of them may not exist yet (the push branch, the lease): ask which do.
            listed = self._git("ls-remote", "origin", *want.values())
            present = {line.split("\t", 1)[1] for line in listed.splitlines() if "\t" in line}
            if want[_WATCHED] not in present:
                raise TemporaryError(f"commit-back: branch {self.branch!r} not found at "
                                     f"{redact(self.url)}", delay=self.timeout) from None
            if all(ref in present for ref in want.values()):
                raise first from None
            fetch([n for n in want if want[n] in present])
            for name in [n for n in want if want[n] not in present]:
                self._git("update-ref", "-d", name)
        fields = self._git("for-each-ref", "--format=%(refname)%00%(objectname)%00"
                           "%(contents:body)%00", "refs/writeback/").split("\0")
        found = {ref.lstrip("\n"): (sha, body)
                 for ref, sha, body in zip(fields[0::3], fields[1::3], fields[2::3], strict=False)}
        return {name: found[name] for name in want if name in found}

    def _push(self, commit: str, ref: str) -> tuple[bool, str]:
        """Push ``commit`` to ``ref`` -- never forced. (True, "") when the remote took it,
        (False, reason) when someone moved the ref first; any other refusal raises."""
        argv = ["git", "push", "--porcelain", "--no-verify", "origin", f"{commit}:{ref}"]
        try:
            proc = run(argv, timeout=self.timeout, env=self.env, cwd=self.work_dir, check=False)
        except ToolFailed as exc:
            raise TemporaryError(f"commit-back to {redact(self.url)}: {redact(str(exc))}",
                                 delay=self.timeout) from None
        tail = redact(proc.stderr.decode(errors="replace").strip()[-800:])
        for line in proc.stdout.decode(errors="replace").splitlines():
            flag, _, rest = line.partition("\t")
            if not rest.startswith(f"{commit}:{ref}\t"):
                continue
            summary = rest.split("\t", 1)[1]
            if flag in (" ", "*", "="):  # fast-forward, new ref, already there
                return True, ""
            if flag == "!" and any(r in summary for r in _RETRY_REASONS):
                return False, summary
            if flag == "!":
                raise self._refused(ref, summary, tail)
        raise TemporaryError(f"commit-back: git push to {redact(self.url)} failed with exit "
                             f"status {proc.returncode}" + (f": {tail}" if tail else ""),
                             delay=self.timeout)

    def _refused(self, ref: str, summary: str, stderr: str) -> PermanentError:
        # What the remote said (a hook's message: "protected branch", ...) helps the operator.
        said = " ".join(line.removeprefix("remote:").strip() for line in stderr.splitlines()
                        if line.startswith("remote:"))
        reason = redact(summary + (f": {said[:400]}" if said else ""))
        if ref == self.lease_ref:
            return PermanentError(
                f"the remote refused the lease ref {ref}: {reason}",
                hint="allow pushes to refs/reconciler/* for this key, or set lease_ref: "
                f"refs/heads/reconciler-lease/{self.push_branch} (an ordinary branch)")
        return PermanentError(
            f"the remote refused inspection reports on {ref}: {reason}",
            hint="a protected branch? give the deploy key push rights on it, or set push_branch "
            "to a branch it may push")

    # -- the lease -------------------------------------------------------------------------

    def _hold(self, held: tuple[str, str] | None) -> None:
        """Make sure this instance holds the lease for at least half its ttl, or raise."""
        now = self.clock()
        lease = self._read_lease(*held) if held else None
        if lease is not None and lease.holder != self.instance and lease.expires > now:
            until = datetime.fromtimestamp(lease.expires, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            raise PermanentError(
                f"branch {self.push_branch} of {redact(self.url)} is leased to "
                f"{lease.describe()} until {until} ({lease.expires - now:.0f} s from now): "
                "two reconcilers must not write one branch; inspection reports not written",
                hint=f"stop the other reconciler or give this one another push_branch; the lease "
                f"lapses {self.lease_ttl:.0f} s after its holder's last write (to break it now: "
                f"git push origin :{self.lease_ref})")
        if lease is not None and lease.holder == self.instance \
                and lease.expires - now > self.lease_ttl / 2:
            return
        if lease is not None and lease.holder != self.instance:
            LOG.warning("taking over the expired lease of %s on %s", lease.describe(),
                        self.push_branch)
        new = self._lease_commit(lease.commit if lease else None, now + self.lease_ttl)
        taken, reason = self._push(new, self.lease_ref)
        if not taken:
            LOG.info("lease %s moved while taking it (%s); looking again", self.lease_ref, reason)
            raise _Raced()

    def _read_lease(self, commit: str, body: str) -> Lease:
        try:
            data = yaml.safe_load(body)
            expires = datetime.fromisoformat(str(data["expires"]).replace("Z", "+00:00"))
            return Lease(commit, str(data["holder"]), str(data.get("host", "?")),
                         expires.timestamp())
        except (yaml.YAMLError, TypeError, KeyError, ValueError, AttributeError):
            LOG.warning("lease %s at %s is unreadable; treated as expired", self.lease_ref,
                        commit[:12])
            return Lease(commit, "?", "?", 0.0)

    def _lease_commit(self, parent: str | None, expires: float) -> str:
        """A commit of the empty tree naming this holder, child of the current lease."""
        until = datetime.fromtimestamp(expires, UTC).isoformat(timespec="seconds")
        until = until.replace("+00:00", "Z")
        body = yaml.safe_dump({"holder": self.instance, "host": self.host,
                               "branch": self.push_branch, "expires": until}, sort_keys=True)
        message = (f"lease: {self.push_branch} held by {self.instance} on {self.host} "
                   f"until {until}\n\n{body}")
        tree = self._git("mktree", input=b"").strip()  # the empty tree, written once
        parents = ["-p", parent] if parent else []
        return self._git("commit-tree", tree, *parents, "-F", "-",
                         input=message.encode()).strip()

    # -- the commit ------------------------------------------------------------------------

    def _commit(self, base: str, changes: Mapping[str, str | None],
                summary: Mapping[str, str]) -> tuple[str, tuple[str, ...]] | None:
        """The batch written on ``base`` as one commit: (commit, servers changed), or None when
        ``base`` has it all already. One ``git fast-import`` makes the commit from the files'
        bytes: nothing is checked out, so nothing committed in the repository (a symlink in
        place of ``inspection/``) can send a write anywhere on this machine."""
        paths = {name: f"{self.report_dir}{name}.yaml" for name in changes}
        parts = self.report_dir.strip("/").split("/")
        directories = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        listed = self._git("ls-tree", "-z", "--full-tree", base, "--", *directories,
                           *paths.values())
        entries: dict[str, tuple[str, str]] = {}  # path -> (mode, object id)
        for entry in filter(None, listed.split("\0")):
            meta, _, path = entry.partition("\t")
            mode, _kind, sha = meta.split()
            entries[path] = (mode, sha)
        for path in directories:
            if path in entries and entries[path][0] != TREE_MODE:
                raise PermanentError(f"{path}: not a directory in the repository (mode "
                                     f"{entries[path][0]}): inspection reports not written")
        ops: list[bytes] = []
        servers: list[str] = []
        for name, text in sorted(changes.items()):
            path = paths[name]
            mode, sha = entries.get(path, ("", ""))
            if mode and mode not in FILE_MODES:
                raise PermanentError(f"{path}: not a regular file in the repository (mode "
                                     f"{mode}): the report is not written over it")
            if text is None:
                if mode:
                    ops.append(b"D " + path.encode() + b"\n")
                    servers.append(name)
                continue
            data = text.encode("utf-8")
            if mode == REPORT_MODE and sha == blob_id(data):
                continue
            ops.append(b"M %s inline %s\ndata %d\n%s\n" % (
                REPORT_MODE.encode(), path.encode(), len(data), data))
            servers.append(name)
        if not servers:
            return None
        message = self._message(tuple(servers), changes, summary).encode("utf-8")
        who = f"{self.env['GIT_COMMITTER_NAME']} <{self.env['GIT_COMMITTER_EMAIL']}> " \
              f"{int(self.clock())} +0000".encode()
        stream = b"".join([
            b"reset %s\nfrom %s\n\n" % (_NEW.encode(), base.encode()),
            b"commit %s\nmark :1\nauthor %s\ncommitter %s\ndata %d\n%s\n" % (
                _NEW.encode(), who, who, len(message), message),
            *ops, b"\ndone\n"])
        marks = self.work_dir / "writeback.marks"
        self._git("fast-import", "--quiet", "--done", f"--export-marks={marks}", input=stream)
        commit = marks.read_text().split()[1]
        return commit, tuple(servers)

    def _message(self, servers: tuple[str, ...], changes: Mapping[str, str | None],
                 summary: Mapping[str, str]) -> str:
        shown = ", ".join(servers[:SUBJECT_SERVERS])
        if len(servers) > SUBJECT_SERVERS:
            shown += f" and {len(servers) - SUBJECT_SERVERS} more"
        lines = []
        for name in servers:
            default = "report removed" if changes.get(name) is None else "report updated"
            line = _CONTROL.sub(" ", summary.get(name) or default).strip()[:200]
            lines.append(f"- {name}: {line}")
        when = datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return (f"inspection: {shown}\n\n" + "\n".join(lines)
                + f"\n\nInspection reports as of {when}.\n\n"
                + f"{TRAILER}: {self.instance} on {self.host}\n")
