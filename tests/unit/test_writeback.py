"""The commit-back writer against real bare git remotes (each keeps a reflog of every update, so
a force-push or a lost commit would show in the remote's own history)."""

from __future__ import annotations

import base64
import http.server
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.engine.config import RunSettings, load_run_settings
from reconciler.engine.writeback import (
    ReportWriter,
    auth_env,
    instance_id,
    resolve_token,
)
from reconciler.errors import InputError, PermanentError, TemporaryError
from tests.fixtures.gitpusher import Pusher, Remote, git

A, B = "a" * 32, "b" * 32
T0 = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return Remote(tmp_path / "r")


def writer(remote: Remote, tmp_path: Path, name: str = "wb", **kwargs: Any) -> ReportWriter:
    kwargs.setdefault("instance", A)
    kwargs.setdefault("host", "host-a")
    kwargs.setdefault("sleep", lambda _s: None)
    return ReportWriter(str(remote.bare), remote.branch, kwargs.pop("path", ""),
                        tmp_path / name, **kwargs)


def report(name: str, serial: str) -> str:
    return f"server: {name}\nhardware:\n  disks:\n  - serial: {serial}\n"


def changed_paths(remote: Remote, commit: str) -> list[str]:
    return git("diff", "--name-only", f"{commit}~1", commit, cwd=remote.bare).split()


# -- one batch, one commit --------------------------------------------------------------------


def test_a_batch_of_three_servers_is_one_commit_naming_them(remote: Remote,
                                                            tmp_path: Path) -> None:
    before = remote.head()
    w = writer(remote, tmp_path, clock=Clock())
    names = ["lab-host-01", "lab-host-02", "lab-host-03"]
    done = w.write({n: report(n, f"QM{i}") for i, n in enumerate(names)},
                   {"lab-host-01": "hardware: disk vda serial QM0001 -> QM0002"})

    assert done.commit == remote.head() and done.servers == tuple(names)
    assert remote.count(f"{before}..{done.commit}") == 1
    assert sorted(changed_paths(remote, done.commit)) == [f"inspection/{n}.yaml" for n in names]
    for i, n in enumerate(names):
        assert remote.show(f"main:inspection/{n}.yaml") == report(n, f"QM{i}")
    message = git("log", "-1", "--format=%B", done.commit, cwd=remote.bare)
    assert message.splitlines()[0] == "inspection: lab-host-01, lab-host-02, lab-host-03"
    assert "- lab-host-01: hardware: disk vda serial QM0001 -> QM0002" in message
    assert "- lab-host-02: report updated" in message
    assert "2027-01-15 08:00:00 UTC" in message  # the time is in the message, not the files
    trailers = git("interpret-trailers", "--parse", cwd=remote.bare, input=message.encode())
    assert trailers.strip() == f"Reconciler-Instance: {A} on host-a"
    author = git("log", "-1", "--format=%an <%ae>|%cn <%ce>", done.commit, cwd=remote.bare)
    assert author.strip() == "reconciler <reconciler@localhost>|reconciler <reconciler@localhost>"


def test_an_unchanged_batch_makes_no_commit(remote: Remote, tmp_path: Path) -> None:
    w = writer(remote, tmp_path)
    first = w.write({"lab-host-01": report("lab-host-01", "X"), "lab-host-02": "b\n"}, {})
    head, updates = remote.head(), remote.updates("refs/heads/main")

    again = w.write({"lab-host-01": report("lab-host-01", "X"), "lab-host-02": "b\n"}, {})
    assert again.nothing_to_do and remote.head() == head
    assert remote.updates("refs/heads/main") == updates

    # only what differs is committed and named
    part = w.write({"lab-host-01": report("lab-host-01", "X"), "lab-host-02": "c\n"}, {})
    assert part.servers == ("lab-host-02",) and part.commit != first.commit
    subject = git("log", "-1", "--format=%s", cwd=remote.bare).strip()
    assert subject == "inspection: lab-host-02"


def test_a_report_of_a_server_gone_is_removed(remote: Remote, tmp_path: Path) -> None:
    w = writer(remote, tmp_path)
    w.write({"lab-host-01": "a\n", "lab-host-02": "b\n"}, {})
    done = w.write({"lab-host-02": None, "lab-host-09": None}, {"lab-host-02": "removed"})
    assert done.servers == ("lab-host-02",)
    assert remote.show("main:inspection/lab-host-02.yaml") is None
    assert remote.show("main:inspection/lab-host-01.yaml") == "a\n"
    assert w.write({"lab-host-02": None}, {}).nothing_to_do


def test_a_long_batch_names_a_few_in_the_subject_and_all_in_the_body(remote: Remote,
                                                                    tmp_path: Path) -> None:
    w = writer(remote, tmp_path)
    names = [f"lab-host-{i:02}" for i in range(1, 8)]
    w.write({n: f"{n}\n" for n in names}, {})
    message = git("log", "-1", "--format=%B", cwd=remote.bare)
    assert message.splitlines()[0] == ("inspection: lab-host-01, lab-host-02, lab-host-03, "
                                       "lab-host-04 and 3 more")
    assert all(f"- {n}: " in message for n in names)


def test_only_inspection_is_touched_and_a_subdirectory_inventory_gets_its_own(
        tmp_path: Path) -> None:
    remote = Remote(tmp_path / "r", prefix="dc1")
    before = remote.head()
    w = writer(remote, tmp_path, path="dc1")
    done = w.write({"lab-host-01": "x\n"}, {})
    assert changed_paths(remote, done.commit or "") == ["dc1/inspection/lab-host-01.yaml"]
    diff = git("diff", "--stat", before, "main", "--", ":!dc1/inspection", cwd=remote.bare)
    assert diff == ""


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "", "..", "x" * 65, "a\nb", "ab\n",
                                  "/etc"])
def test_a_name_that_is_not_a_plain_file_name_is_refused(remote: Remote, tmp_path: Path,
                                                         name: str) -> None:
    head = remote.head()
    w = writer(remote, tmp_path)
    with pytest.raises(PermanentError, match="not a plain server name"):
        w.write({"lab-host-01": "ok\n", name: "evil\n"}, {})
    assert remote.head() == head
    assert not (tmp_path / "wb").exists()  # refused before any git command


def test_a_symlink_in_place_of_the_inspection_directory_is_not_followed(
        remote: Remote, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, remote.person / "inspection")
    remote.commit_push({}, "inspection is a symlink")
    head = remote.head()
    with pytest.raises(PermanentError, match="inspection: not a directory in the repository"):
        writer(remote, tmp_path).write({"lab-host-01": "x\n"}, {})
    assert list(outside.iterdir()) == [] and remote.head() == head


def test_a_symlinked_report_file_is_not_written_through(remote: Remote, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    (remote.person / "inspection").mkdir()
    os.symlink(victim, remote.person / "inspection" / "lab-host-01.yaml")
    remote.commit_push({}, "a report that is a symlink")
    with pytest.raises(PermanentError, match="not a regular file in the repository"):
        writer(remote, tmp_path).write({"lab-host-01": "x\n"}, {})
    assert victim.read_text() == "keep\n"


def test_a_gitignore_does_not_stop_a_report(remote: Remote, tmp_path: Path) -> None:
    remote.commit_push({".gitignore": "*.yaml\n"}, "ignore yaml")
    done = writer(remote, tmp_path).write({"lab-host-01": "x\n"}, {})
    assert remote.show("main:inspection/lab-host-01.yaml") == "x\n" and done.commit


# -- the push branch --------------------------------------------------------------------------


def test_a_push_branch_is_made_from_the_watched_one_and_followed(remote: Remote,
                                                                 tmp_path: Path) -> None:
    main = remote.head()
    w = writer(remote, tmp_path, push_branch="inspection-reports")
    first = w.write({"lab-host-01": "1\n"}, {})
    assert remote.head() == main  # the watched branch is not written
    assert remote.head("refs/heads/inspection-reports") == first.commit
    assert git("rev-parse", f"{first.commit}~1", cwd=remote.bare).strip() == main
    remote.commit_push({"README.md": "edited\n"}, "a person edits main")
    second = w.write({"lab-host-02": "2\n"}, {})
    assert git("rev-parse", f"{second.commit}~1", cwd=remote.bare).strip() == first.commit
    assert remote.head("refs/reconciler/lease/inspection-reports")
    assert remote.forced_updates("refs/heads/inspection-reports") == []


# -- rejected pushes --------------------------------------------------------------------------


class Interleaved(ReportWriter):
    """A writer during whose commits someone else pushes ``times`` times: each push lands
    between its fetch and its push, so each of those pushes is rejected."""

    def __init__(self, *args: Any, remote: Remote, times: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.remote, self.times = remote, times
        self.others: list[str] = []

    def _commit(self, base: str, changes: Any, summary: Any) -> Any:
        made = super()._commit(base, changes, summary)
        if len(self.others) < self.times:
            n = len(self.others)
            self.others.append(self.remote.commit_push({f"notes/{n}.txt": f"{n}\n"}, f"n {n}"))
        return made


def test_a_rejected_push_is_written_again_on_the_new_head(remote: Remote,
                                                          tmp_path: Path) -> None:
    pauses: list[float] = []
    w = Interleaved(str(remote.bare), "main", "", tmp_path / "wb", instance=A, remote=remote,
                    times=2, sleep=pauses.append)
    done = w.write({"lab-host-01": "r\n"}, {"lab-host-01": "new"})
    assert done.attempts == 3 and len(pauses) == 2 and all(0 <= p <= 0.15 for p in pauses)
    assert remote.missing([*w.others, done.commit or ""], remote.head()) == []
    assert git("rev-parse", f"{done.commit}~1", cwd=remote.bare).strip() == w.others[-1]
    assert changed_paths(remote, done.commit or "") == ["inspection/lab-host-01.yaml"]
    assert remote.forced_updates("refs/heads/main") == []


def test_after_a_few_rejections_the_engine_gets_a_temporary_error(remote: Remote,
                                                                  tmp_path: Path) -> None:
    w = Interleaved(str(remote.bare), "main", "", tmp_path / "wb", instance=A, remote=remote,
                    times=5, sleep=lambda _s: None)
    with pytest.raises(TemporaryError, match="after 5 attempts"):
        w.write({"lab-host-01": "r\n"}, {})
    assert remote.missing(w.others, remote.head()) == []
    assert remote.show("main:inspection/lab-host-01.yaml") is None
    # the next pass (the engine keeps the batch) gets through
    assert w.write({"lab-host-01": "r\n"}, {}).commit == remote.head()
    assert remote.forced_updates("refs/heads/main") == []


def test_a_refusing_remote_is_a_permanent_error(remote: Remote, tmp_path: Path) -> None:
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected branch' >&2\nexit 1\n")
    hook.chmod(0o755)
    with pytest.raises(PermanentError, match="refused the lease ref"):
        writer(remote, tmp_path).write({"lab-host-01": "x\n"}, {})


# -- the lease --------------------------------------------------------------------------------


def test_another_holders_lease_stops_the_write_naming_it(remote: Remote, tmp_path: Path) -> None:
    clock = Clock()
    writer(remote, tmp_path, "wa", clock=clock).write({"lab-host-01": "a\n"}, {})
    head = remote.head()
    clock.now += 100
    other = writer(remote, tmp_path, "wb", instance=B, host="host-b", clock=clock)
    with pytest.raises(PermanentError) as caught:
        other.write({"lab-host-01": "b\n"}, {})
    text = str(caught.value)
    assert f"leased to reconciler {A} on host-a until 2027-01-15 08:10:00 UTC (500 s" in text
    assert "git push origin :refs/reconciler/lease/main" in text
    assert remote.head() == head


def test_an_expired_lease_is_taken_over_and_the_old_holder_then_stops(remote: Remote,
                                                                      tmp_path: Path) -> None:
    clock = Clock()
    first = writer(remote, tmp_path, "wa", clock=clock)
    first.write({"lab-host-01": "a\n"}, {})
    lease_a = remote.head("refs/reconciler/lease/main")
    clock.now += 601
    second = writer(remote, tmp_path, "wb", instance=B, host="host-b", clock=clock)
    assert second.write({"lab-host-01": "b\n"}, {}).commit == remote.head()
    lease_b = remote.head("refs/reconciler/lease/main")
    assert git("rev-parse", f"{lease_b}~1", cwd=remote.bare).strip() == lease_a
    assert f"holder: {B}" in git("log", "-1", "--format=%B", lease_b, cwd=remote.bare)
    with pytest.raises(PermanentError, match=f"leased to reconciler {B} on host-b"):
        first.write({"lab-host-01": "a again\n"}, {})
    assert remote.show("main:inspection/lab-host-01.yaml") == "b\n"
    assert remote.forced_updates("refs/reconciler/lease/main") == []


class Racing(ReportWriter):
    """A writer that, while it takes the lease, loses the race to ``rival`` (which takes the
    lease between this one's reading it and pushing its own lease commit)."""

    def __init__(self, *args: Any, rival: ReportWriter, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rival: ReportWriter | None = rival

    def _lease_commit(self, parent: str | None, expires: float) -> str:
        if self.rival is not None:
            rival, self.rival = self.rival, None
            rival.write({"lab-host-02": "rival\n"}, {})
        return super()._lease_commit(parent, expires)


def test_two_reconcilers_racing_for_a_lease_cannot_both_win(remote: Remote,
                                                            tmp_path: Path) -> None:
    clock = Clock()
    rival = writer(remote, tmp_path, "wb", instance=B, host="host-b", clock=clock)
    loser = Racing(str(remote.bare), "main", "", tmp_path / "wa", instance=A, host="host-a",
                   clock=clock, rival=rival, sleep=lambda _s: None)
    with pytest.raises(PermanentError, match=f"leased to reconciler {B} on host-b"):
        loser.write({"lab-host-01": "loser\n"}, {})
    assert remote.show("main:inspection/lab-host-01.yaml") is None
    assert remote.show("main:inspection/lab-host-02.yaml") == "rival\n"
    assert remote.updates("refs/reconciler/lease/main") == 1


def test_an_unreadable_lease_is_taken_over(remote: Remote, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    tree = git("mktree", cwd=remote.bare, input=b"").strip()
    junk = git("commit-tree", tree, "-m", "lease\n\n- not: [a mapping", cwd=remote.bare).strip()
    git("update-ref", "refs/reconciler/lease/main", junk, cwd=remote.bare)
    assert writer(remote, tmp_path).write({"lab-host-01": "x\n"}, {}).commit
    lease = remote.head("refs/reconciler/lease/main")
    assert git("rev-parse", f"{lease}~1", cwd=remote.bare).strip() == junk
    assert "unreadable; treated as expired" in caplog.text


def test_the_lease_is_renewed_only_when_half_of_it_is_gone(remote: Remote,
                                                           tmp_path: Path) -> None:
    clock = Clock()
    w = writer(remote, tmp_path, clock=clock)
    ref = "refs/reconciler/lease/main"
    w.write({"lab-host-01": "1\n"}, {})
    clock.now += 200
    w.write({"lab-host-01": "2\n"}, {})
    assert remote.updates(ref) == 1
    clock.now += 150  # 250 s left of 600
    w.write({"lab-host-01": "3\n"}, {})
    assert remote.updates(ref) == 2 and remote.forced_updates(ref) == []


def test_a_released_lease_is_free_at_once(remote: Remote, tmp_path: Path) -> None:
    clock = Clock()
    first = writer(remote, tmp_path, "wa", clock=clock)
    first.write({"lab-host-01": "a\n"}, {})
    first.release()
    second = writer(remote, tmp_path, "wb", instance=B, clock=clock)
    assert second.write({"lab-host-01": "b\n"}, {}).commit


def test_the_instance_id_is_made_once_in_the_data_dir(tmp_path: Path) -> None:
    made = instance_id(tmp_path)
    assert len(made) == 32 and instance_id(tmp_path) == made
    assert (tmp_path / "instance-id").read_text().strip() == made


# -- credentials ------------------------------------------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        self.send_response(403)
        self.end_headers()
        self.wfile.write(b"denied\n")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_remote() -> Iterator[str]:
    _Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/infra/servers.git"
    server.shutdown()
    server.server_close()


def test_an_https_token_travels_in_a_header_never_in_argv_url_or_logs(
        http_remote: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    token = "tok-1f2e3d4c5b6a-secret"
    monkeypatch.setenv("RECONCILER_CRED_GIT_PUSH", f"x-access-token:{token}")
    settings = RunSettings(repo=http_remote, git_token="git-push", data_dir=tmp_path)
    caplog.set_level(logging.DEBUG)
    w = ReportWriter.from_settings(settings, sleep=lambda _s: None)
    with pytest.raises(TemporaryError) as caught:
        w.write({"lab-host-01": "x\n"}, {})
    expected = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    assert _Recorder.seen and all(auth == f"Basic {expected}" for _, auth in _Recorder.seen)
    assert token not in str(caught.value) and expected not in str(caught.value)
    argv_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("+ ")]
    assert argv_lines and all(token not in line and expected not in line for line in argv_lines)
    assert all(token not in r.getMessage() for r in caplog.records)
    config = (tmp_path / "writeback" / "config").read_text()
    assert token not in config and expected not in config


def test_a_token_echoed_by_the_remote_is_masked(remote: Remote, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    token = "tok-echoed-9a8b7c6d5e"
    resolve_token("echo-ref", env={"RECONCILER_CRED_ECHO_REF": f"u:{token}"})  # registers it
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text(f"#!/bin/sh\necho 'bad credentials u:{token}' >&2\nexit 1\n")
    hook.chmod(0o755)
    with pytest.raises(PermanentError) as caught:
        writer(remote, tmp_path).write({"lab-host-01": "x\n"}, {})
    assert "bad credentials u:***" in str(caught.value) and token not in str(caught.value)
    # a failing git command quoting it (here in the path it cannot find) is masked too
    lost = ReportWriter(str(tmp_path / f"gone-{token}.git"), "main", "", tmp_path / "wb2",
                        instance=A)
    with pytest.raises(TemporaryError) as fetched:
        lost.write({"lab-host-01": "x\n"}, {})
    assert "gone-***" in str(fetched.value) and token not in str(fetched.value)


def test_a_deploy_key_is_used_through_git_ssh_command(remote: Remote, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "deploy key"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot a key\n"
                   "-----END OPENSSH PRIVATE KEY-----\n")
    key.chmod(0o600)
    bin_dir, record = tmp_path / "bin", tmp_path / "ssh-args"
    bin_dir.mkdir()
    # A stand-in for ssh: record how it was called, run the git command "on the server".
    (bin_dir / "ssh").write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" >> "{record}"\n'
        'for last; do :; done\nexec sh -c "$last"\n')
    (bin_dir / "ssh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    settings = RunSettings(repo=f"ssh://git.example.invalid{remote.bare}", git_ssh_key=key,
                           data_dir=tmp_path)
    done = ReportWriter.from_settings(settings).write({"lab-host-01": "x\n"}, {})
    assert done.commit == remote.head()
    args = record.read_text().splitlines()
    assert args[:6] == ["-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]


def test_credentials_settings_are_checked_before_any_git_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InputError, match="git_ssh_key: .* is not a file"):
        auth_env(RunSettings(repo="ssh://h/r", git_ssh_key=tmp_path / "nope"))
    monkeypatch.setenv("RECONCILER_SECRETS_DIR", str(tmp_path))
    with pytest.raises(InputError, match="credentials 'gone' not found"):
        auth_env(RunSettings(repo="https://h/r", git_token="gone"))
    (tmp_path / "tok").write_text("abcdef-token\n")
    with pytest.raises(InputError, match="plain http"):
        auth_env(RunSettings(repo="http://git.example.net/r", git_token="tok"))
    with pytest.raises(InputError, match="not an https:// URL"):
        auth_env(RunSettings(repo="git@host:r.git", git_token="tok"))
    env = auth_env(RunSettings(repo="https://u@git.example.net:8443/r.git", git_token="tok"))
    assert env["GIT_CONFIG_KEY_0"] == "http.https://git.example.net:8443/.extraHeader"
    assert env["GIT_CONFIG_VALUE_0"] == "Authorization: Basic " + base64.b64encode(
        b"x-access-token:abcdef-token").decode()


def test_the_run_settings_parse_the_commit_back_keys(tmp_path: Path) -> None:
    settings = load_run_settings(
        {"repo": "r", "writeback": "no", "push_branch": "reports", "git_author": "Bot <b@x>",
         "lease_ttl": 120, "git_token": "git-push", "lease_ref": "refs/heads/lease"},
        "config.yaml", env={})
    assert (settings.writeback, settings.push_branch, settings.git_author, settings.lease_ttl,
            settings.git_token, settings.lease_ref) == (
        False, "reports", "Bot <b@x>", 120.0, "git-push", "refs/heads/lease")
    defaults = load_run_settings({"repo": "r"}, "c", env={})
    assert defaults.writeback and defaults.push_branch == "" and defaults.lease_ttl == 600
    for key, value in (("git_author", "no email"), ("lease_ref", "refs/a..b"),
                       ("push_branch", "-x"), ("git_token", "a token with spaces")):
        with pytest.raises(InputError, match=f"config.yaml: {key}"):
            load_run_settings({"repo": "r", key: value}, "config.yaml", env={})


# -- the concurrent pusher --------------------------------------------------------------------


ROUNDS = int(os.environ.get("WRITEBACK_ROUNDS", "200"))


def test_a_concurrent_pusher_loses_nothing_and_nothing_is_forced(remote: Remote,
                                                                 tmp_path: Path) -> None:
    """A person pushing notes in a tight loop while the writer commits reports ROUNDS times:
    every commit either made is in the final history, every branch update in the remote's
    reflog is a fast-forward, and every report has its last content."""
    pusher = Pusher(remote, tmp_path / "pusher")
    w = writer(remote, tmp_path, sleep=time.sleep)
    servers = [f"lab-host-{i:02}" for i in range(1, 6)]
    last: dict[str, str] = {}
    commits: list[str] = []
    gave_up = 0
    pusher.start()
    try:
        for n in range(ROUNDS):
            batch = {s: report(s, f"R{n}") for s in servers[n % 5:n % 5 + 2]}
            while True:  # the engine keeps a batch that did not get through
                try:
                    done = w.write(batch, {s: f"round {n}" for s in batch})
                    break
                except TemporaryError:
                    gave_up += 1
            assert done.commit is not None
            commits.append(done.commit)
            last.update(batch)
    finally:
        pusher.stop.set()
        pusher.join(timeout=60)
    assert pusher.error is None, pusher.error
    head = remote.head()
    assert len(pusher.pushed) > 10, "the pusher hardly pushed: no contention was tested"
    assert remote.missing(pusher.pushed, head) == []
    assert remote.missing(commits, head) == []
    assert remote.forced_updates("refs/heads/main") == []
    assert remote.forced_updates("refs/reconciler/lease/main") == []
    for server, text in last.items():
        assert remote.show(f"main:inspection/{server}.yaml") == text
    for n in range(len(pusher.pushed)):
        assert remote.show(f"main:notes/notes-{n}.txt") == f"note {n}\n"
    # writer commits touch inspection/ only
    touched = git("log", "--format=", "--name-only", "--author=reconciler", "main",
                  cwd=remote.bare).split()
    assert touched and all(p.startswith("inspection/") for p in touched)
    print(f"\n{ROUNDS} report commits, {len(pusher.pushed)} pusher commits, "
          f"{pusher.rejected} pusher rejections, {gave_up} writer give-ups")
