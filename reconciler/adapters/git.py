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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import git

from reconciler.errors import InputError
from reconciler.model.inventory import (
    PROFILES_FILE,
    SERVERS_DIR,
    SUBNETS_FILE,
    TEMPLATES_DIR,
    read_directory,
)

LOG = logging.getLogger(__name__)
WORKTREE = "WORKTREE"  # pseudo revision: the files on disk


def _wanted(rel: str) -> bool:
    return rel in (SUBNETS_FILE, PROFILES_FILE) or rel.startswith((SERVERS_DIR, TEMPLATES_DIR))


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

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        try:
            self.repo = git.Repo(self.path, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise InputError(f"{path}: not inside a git repository") from None
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
        commit = self.repo.commit(self.resolve(rev))
        try:
            tree = commit.tree / self.prefix.rstrip("/") if self.prefix else commit.tree
        except KeyError:
            return Snapshot(commit.hexsha, {}, {}, {})
        known = known or {}
        files_out: dict[str, bytes] = {}
        blobs_out: dict[str, str] = {}
        odb = self.repo.odb
        entry: Any
        for entry in tree.traverse():
            item = entry
            if item.type != "blob":
                continue
            rel = item.path[len(self.prefix):]
            if not _wanted(rel):
                continue
            sha = item.hexsha
            data = known.get(sha)
            if data is None:
                data = odb.stream(item.binsha).read()
            files_out[rel] = data
            blobs_out[rel] = sha
        return Snapshot(commit.hexsha, files_out, blobs_out, self.seniority(commit.hexsha))
