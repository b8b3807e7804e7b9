"""The one git adapter (gitpython): inventory files at a revision, and server seniority.

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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import git

from reconciler.errors import InputError
from reconciler.model.inventory import (
    PROFILES_FILE,
    SERVERS_DIR,
    SUBNETS_FILE,
    TEMPLATES_DIR,
    read_directory,
)
from reconciler.model.policy import POLICY_FILE

LOG = logging.getLogger(__name__)
WORKTREE = "WORKTREE"  # pseudo revision: the files on disk


def _wanted(rel: str) -> bool:
    return rel in (SUBNETS_FILE, PROFILES_FILE, POLICY_FILE) or \
        rel.startswith((SERVERS_DIR, TEMPLATES_DIR))


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
            files = read_directory(self.path)
            blobs = {p: blob_id(d) for p, d in files.items()}
            seniority = self.seniority("HEAD") if self.has_commits() else {}
            return Snapshot(WORKTREE, files, blobs, seniority)
        commit = self.resolve(rev)
        listing = self.repo.git.ls_tree("-r", "-z", "--full-tree", commit, "--",
                                        self.prefix or ".")
        known = known or {}
        blobs_out: dict[str, str] = {}
        for entry in listing.split("\0"):
            if not entry:
                continue
            meta, _, path = entry.partition("\t")
            _mode, kind, sha = meta.split()
            rel = path[len(self.prefix):]
            if kind == "blob" and _wanted(rel):
                blobs_out[rel] = sha
        missing = sorted({sha for sha in blobs_out.values() if sha not in known})
        read = self._read_blobs(missing)
        files_out = {rel: known[sha] if sha in known else read[sha]
                     for rel, sha in blobs_out.items()}
        return Snapshot(commit, files_out, blobs_out, self.seniority(commit))

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
