"""The one git adapter (gitpython): inventory files at a revision, and server seniority.

A revision is read from git objects only. Its tree's entries say what each is: a regular file
(mode 100644/100755) is read as content -- within the limits of
:mod:`reconciler.model.limits`, checked on the blob size git lists before the blob is read --
a symlink (120000) or a submodule (160000) never is: each is a problem naming the path. The
work tree (``WORKTREE``) is read by :func:`reconciler.model.inventory.read_worktree`, which
follows no symlink either.

Seniority -- the order servers were added to the inventory -- is what makes IPAM collision
resolution history-stable (see :mod:`reconciler.model.ipam`). It is read from
``git log --diff-filter=A -M``: a server's rank is the commit that last *added* its file
(a move with rename detection keeps the original addition; deleting and re-adding a server
makes it the most junior again, so it cannot displace whoever took its address meanwhile).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import git

from reconciler.errors import InputError
from reconciler.model import limits
from reconciler.model.inventory import (
    INSPECTION_DIR,
    PROFILES_FILE,
    SERVERS_DIR,
    SUBNETS_FILE,
    TEMPLATES_DIR,
    odd_name,
    read_worktree,
    wanted,
)
from reconciler.model.policy import POLICY_FILE
from reconciler.model.problems import Problem

LOG = logging.getLogger(__name__)
WORKTREE = "WORKTREE"  # pseudo revision: the files on disk
# What a tree entry's mode says it is (git's object modes): only regular files are content.
SYMLINK_MODE = "120000"
SUBMODULE_MODE = "160000"
_INVENTORY_PATHS = (SUBNETS_FILE, PROFILES_FILE, POLICY_FILE, SERVERS_DIR.rstrip("/"),
                    TEMPLATES_DIR.rstrip("/"))
# Listed after the rest (git's tree order would put it first), so the limits refuse a report
# before a server file, as in the work tree.
_REPORT_PATHS = (INSPECTION_DIR.rstrip("/"),)


def blob_id(data: bytes) -> str:
    """git's object id of a blob with this content (so worktree files compare to commits)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Inventory files at one revision: path -> bytes, path -> blob id, and seniority."""

    revision: str  # commit id, or WORKTREE
    files: Mapping[str, bytes]
    blobs: Mapping[str, str]
    seniority: Mapping[str, int]
    # A problem for each inventory path not read (a symlink, a submodule, over a limit): give
    # them to parse_inventory(refused=...).
    refused: tuple[Problem, ...] = ()


class GitInventory:
    """An inventory directory inside a git work tree (possibly a sub-directory of it)."""

    def __init__(self, path: Path, *, prefix: str | None = None) -> None:
        """``path``: the inventory directory in a work tree; or, with ``prefix`` (the
        inventory's directory inside the repository, "" for its root), any repository --
        bare clones included: revisions are read from git objects, never the work tree."""
        self.path = path.resolve()
        try:
            self.repo = git.Repo(self.path, search_parent_directories=prefix is None)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise InputError(f"{path}: not inside a git repository") from None
        if prefix is not None:
            self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
            return
        top = Path(self.repo.working_tree_dir or self.path).resolve()
        rel = self.path.relative_to(top).as_posix()
        self.prefix = "" if rel == "." else rel + "/"

    def resolve(self, rev: str) -> str:
        try:
            return str(self.repo.commit(rev).hexsha)
        except (git.BadName, ValueError, git.GitCommandError):
            raise InputError(f"unknown git revision {rev!r}") from None

    def has_commits(self) -> bool:
        try:
            self.repo.head.commit  # noqa: B018 - raises on an unborn branch
        except ValueError:
            return False
        return True

    def seniority(self, rev: str) -> dict[str, int]:
        """Server name -> rank (0 = added first) from the history reachable from ``rev``."""
        out = self.repo.git.log(
            "--format=%x00%H", "-M", "--diff-filter=A", "--name-only", "--no-color", rev, "--",
            f"{self.prefix}{SERVERS_DIR}",
        )
        commits = [chunk for chunk in out.split("\0") if chunk.strip()]
        ranks: dict[str, int] = {}
        total = len(commits)
        for index, chunk in enumerate(commits):  # newest first
            for line in chunk.splitlines()[1:]:
                if line.endswith((".yaml", ".yml")):
                    name = line.rsplit("/", 1)[-1].rsplit(".", 1)[0]
                    ranks.setdefault(name, total - index)
        return ranks

    def snapshot(self, rev: str, *, known: Mapping[str, bytes] | None = None) -> Snapshot:
        """Inventory files at ``rev`` (or WORKTREE). ``known``: blob id -> bytes already read,
        so comparing two revisions reads each distinct blob once."""
        if rev == WORKTREE:
            files, unread = read_worktree(self.path)
            blobs = {p: blob_id(d) for p, d in files.items()}
            seniority = self.seniority("HEAD") if self.has_commits() else {}
            return Snapshot(WORKTREE, files, blobs, seniority, tuple(unread))
        commit = self.resolve(rev)
        known = known or {}
        blobs_out: dict[str, str] = {}
        refused: list[Problem] = []
        intake = limits.Intake()
        for mode, kind, sha, size, rel in self._entries(commit):
            if intake.stopped:
                break
            refusal = intake.entry()
            if refusal is None and (odd := odd_name(rel)) is not None:
                refused.append(odd)
                continue
            if refusal is None and rel.rsplit("/", 1)[-1].startswith("."):
                continue  # not an inventory file (read_worktree skips these too)
            if refusal is None and rel.count("/") > limits.MAX_DIRECTORY_DEPTH:
                refusal = (f"directories nested deeper than {limits.MAX_DIRECTORY_DEPTH} "
                           "levels are not read")
            if refusal is None and mode == SYMLINK_MODE:
                refusal = "symlinks are not followed"
            if refusal is None and (kind == "commit" or mode == SUBMODULE_MODE):
                refusal = "submodules are not read"
            if refusal is None and kind == "blob" and wanted(rel):
                refusal = intake.file(size)
                if refusal is None:
                    blobs_out[rel] = sha
            if refusal is not None:
                refused.append(Problem(rel, None, "", refusal))
        missing = sorted({sha for sha in blobs_out.values() if sha not in known})
        read = self._read_blobs(missing)
        files_out = {rel: known[sha] if sha in known else read[sha]
                     for rel, sha in blobs_out.items()}
        return Snapshot(commit, files_out, blobs_out, self.seniority(commit), tuple(refused))

    def _entries(self, commit: str) -> Iterator[tuple[str, str, str, int, str]]:
        yield from self._tree(commit, _INVENTORY_PATHS)
        yield from self._tree(commit, _REPORT_PATHS)

    def _tree(self, commit: str, paths: tuple[str, ...]) -> list[tuple[str, str, str, int, str]]:
        """(mode, kind, object id, size, inventory-relative path) of the entries of ``paths``
        at ``commit``, from ``git ls-tree -r -l``: at most one more than MAX_ENTRIES are read
        from git, however many the tree holds."""
        specs = [f":(literal){self.prefix}{p}" for p in paths]
        proc = self.repo.git.ls_tree("-r", "-z", "-l", "--full-tree", commit, "--", *specs,
                                     as_process=True)
        raw: list[bytes] = []
        pending = b""
        while len(raw) <= limits.MAX_ENTRIES:
            chunk = proc.stdout.read(1 << 16)
            if not chunk:
                break
            *done, pending = (pending + chunk).split(b"\0")
            raw += done
        if len(raw) > limits.MAX_ENTRIES:
            proc.proc.kill()  # the rest is not read; the caller reports the entry limit
        else:
            proc.wait()
        out = []
        for entry in raw[:limits.MAX_ENTRIES + 1]:
            meta, _, path = entry.decode("utf-8", "surrogateescape").partition("\t")
            mode, kind, sha, size = meta.split()
            out.append((mode, kind, sha, int(size) if size.isdigit() else 0,
                        path[len(self.prefix):]))
        return out

    def _read_blobs(self, shas: list[str]) -> dict[str, bytes]:
        """Many blobs through one ``git cat-file --batch`` (one process, not one per file)."""
        if not shas:
            return {}
        with tempfile.TemporaryFile() as ids:
            ids.write(("\n".join(shas) + "\n").encode())
            ids.seek(0)
            raw = self.repo.git.execute(["git", "cat-file", "--batch"], istream=ids,
                                        stdout_as_string=False, strip_newline_in_stdout=False)
        out: dict[str, bytes] = {}
        pos = 0
        for sha in shas:
            eol = raw.index(b"\n", pos)
            header = raw[pos:eol].split()
            if len(header) != 3 or header[0].decode() != sha:
                raise InputError(f"git cat-file: unexpected output for {sha}")
            size = int(header[2])
            out[sha] = bytes(raw[eol + 1:eol + 1 + size])
            pos = eol + 1 + size + 1
        return out
