"""Where the desired state comes from: a branch of a git repository, mirrored under the data
directory and fetched on every poll.

The mirror is a bare clone of the one branch (``<data dir>/repo``): no work tree, so nothing of
the repository is ever checked out or followed on disk; files are read from git objects by
:class:`reconciler.adapters.git.GitInventory` (blob modes checked there). Every git operation
runs through the one subprocess wrapper with a timeout, so a hung fetch fails the poll (a
:class:`TemporaryError`) and never wedges the loop. The clone is made under a temporary name and
renamed, so a killed first clone leaves nothing half-made.

Revisions are named as Flux names them: ``main@sha1:<40 hex>``.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from reconciler.adapters.git import GitInventory, Snapshot
from reconciler.adapters.run import run
from reconciler.errors import TemporaryError, ToolFailed

GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",  # never wait for a password
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
}


@dataclass(frozen=True, slots=True)
class Fetched:
    commit: str
    revision: str  # branch@sha1:<hex>
    subject: str


class GitSource:
    def __init__(self, url: str, branch: str, path: str, clone_dir: Path, *,
                 timeout: float = 60.0, env: Mapping[str, str] | None = None) -> None:
        """``env``: credentials for a private repository (a deploy key's GIT_SSH_COMMAND, a
        token's http.extraHeader: :func:`reconciler.engine.writeback.auth_env`)."""
        self.url = url
        self.env = {**GIT_ENV, **(env or {})}
        self.branch = branch
        self.path = path
        self.clone_dir = clone_dir
        self.timeout = timeout

    def _git(self, *args: str, cwd: Path | None = None) -> str:
        try:
            proc = run(["git", *args], timeout=self.timeout, cwd=cwd, env=self.env)
        except ToolFailed as exc:
            raise TemporaryError(f"git {args[0]} of {self.url} ({self.branch}): {exc}",
                                 delay=self.timeout) from None
        return proc.stdout.decode(errors="replace")

    def fetch(self) -> Fetched:
        """Clone once, then fetch the branch; the commit the branch now points at."""
        ref = f"refs/heads/{self.branch}"
        if not (self.clone_dir / "HEAD").exists():
            partial = self.clone_dir.with_name(self.clone_dir.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            self.clone_dir.parent.mkdir(parents=True, exist_ok=True)
            self._git("clone", "--bare", "--single-branch", "--no-tags", "--branch",
                      self.branch, "--", self.url, str(partial))
            partial.rename(self.clone_dir)
        else:
            self._git("fetch", "--no-tags", "--prune", "--force", "origin",
                      f"+{ref}:{ref}", cwd=self.clone_dir)
        out = self._git("log", "-1", "--format=%H%x00%s", ref, cwd=self.clone_dir)
        commit, _, subject = out.strip().partition("\0")
        return Fetched(commit, f"{self.branch}@sha1:{commit}", subject)

    def snapshot(self, commit: str) -> Snapshot:
        inventory = GitInventory(self.clone_dir, prefix=self.path)
        try:
            return inventory.snapshot(commit)
        finally:
            inventory.repo.close()  # its `git cat-file` processes, now, not at collection
