"""Benchmark: commits and pushes per minute the commit-back writer sustains (issue 14).

Against a local bare remote (``tests/fixtures/gitpusher.Remote``), each run on a fresh one:

- baseline: a person's ``git add && git commit && git push`` of one report file, in a shell
  loop (one ``bash`` process, git's own speed, nothing of ours);
- writer: :class:`reconciler.engine.writeback.ReportWriter` writing the same number of batches
  (each one report changed, as a pass that inspected one server) -- every one a fetch, the
  lease check, a fast-import commit and a push;
- both again while a concurrent pusher (``tests/fixtures/gitpusher.Pusher``) pushes unrelated
  commits to the same branch in a tight loop: the baseline then retries with
  ``git pull --rebase`` until its push lands, the writer with its own fetch/re-apply (and,
  after its quick attempts, once more as the engine would after a backoff, counted as a
  give-up).

Printed: per run the commits, seconds, commits/min and the ratio writer / baseline, plus the
pusher's commits and rejections under contention and the commits the branch took per minute
from both (a loop that never fetches before committing can starve the other pusher: its own
rate alone flatters it). Afterwards the remote's reflog is checked:
no force-push, no lost commit.

    .venv/bin/python bench/writeback.py [--commits 300]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.adapters.run import run  # noqa: E402
from reconciler.engine.writeback import ReportWriter  # noqa: E402
from reconciler.errors import TemporaryError  # noqa: E402
from tests.fixtures.gitpusher import PERSON, Pusher, Remote, git  # noqa: E402

BASELINE = """
set -e
for i in $(seq 1 "$N"); do
  printf 'server: lab-host-01\\nround: %s\\n' "$i" > inspection/lab-host-01.yaml
  git add inspection/lab-host-01.yaml
  git commit -q -m "inspection: lab-host-01 ($i)"
  if [ "$RETRY" = 1 ]; then
    until git push -q origin HEAD:main 2>/dev/null; do git pull -q --rebase origin main; done
  else
    git push -q origin HEAD:main
  fi
done
"""


def baseline(root: Path, commits: int, contended: bool) -> tuple[float, Remote, Pusher | None]:
    remote = Remote(root)
    work = root / "baseline"
    git("clone", "-q", str(remote.bare), str(work), cwd=root)
    (work / "inspection").mkdir()
    pusher = Pusher(remote, root / "pusher") if contended else None
    if pusher:
        pusher.start()
    start = time.perf_counter()
    run(["bash", "-c", BASELINE], timeout=3600, cwd=work,
        env={**PERSON, "N": str(commits), "RETRY": "1" if contended else "0"})
    elapsed = time.perf_counter() - start
    if pusher:
        pusher.stop.set()
        pusher.join()
    return elapsed, remote, pusher


def writer(root: Path, commits: int, contended: bool) -> tuple[float, Remote, Pusher | None, int]:
    remote = Remote(root)
    w = ReportWriter(str(remote.bare), "main", "", root / "writeback", instance="b" * 32)
    w.write({"lab-host-00": "warm up\n"}, {})  # the clone and the lease, made once
    pusher = Pusher(remote, root / "pusher") if contended else None
    if pusher:
        pusher.start()
    gave_up = 0
    start = time.perf_counter()
    for i in range(1, commits + 1):
        while True:
            try:
                w.write({"lab-host-01": f"server: lab-host-01\nround: {i}\n"},
                        {"lab-host-01": f"round {i}"})
                break
            except TemporaryError:
                gave_up += 1
    elapsed = time.perf_counter() - start
    if pusher:
        pusher.stop.set()
        pusher.join()
    return elapsed, remote, pusher, gave_up


def check(remote: Remote, pusher: Pusher | None) -> str:
    bad = remote.forced_updates("refs/heads/main")
    lost = remote.missing(pusher.pushed, remote.head()) if pusher else []
    return "ok" if not bad and not lost else f"FORCED {bad} LOST {lost}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commits", type=int, default=300)
    args = parser.parse_args()
    n = args.commits
    print(f"{n} commits per run, local bare remote, git "
          f"{run(['git', '--version'], timeout=10).stdout.decode().split()[-1]}")
    print(f"{'run':46} {'seconds':>8} {'commits/min':>12} {'pusher':>14} {'branch/min':>11}"
          "  history")
    with tempfile.TemporaryDirectory(prefix="bench-writeback-") as tmp:
        root = Path(tmp)
        for contended in (False, True):
            label = "with a concurrent pusher" if contended else "no contention"
            b_time, b_remote, b_pusher = baseline(root / f"b{contended}", n, contended)
            w_time, w_remote, w_pusher, gave_up = writer(root / f"w{contended}", n, contended)
            for name, elapsed, remote, pusher in (
                    (f"baseline git commit && push, {label}", b_time, b_remote, b_pusher),
                    (f"ReportWriter.write, {label}", w_time, w_remote, w_pusher)):
                other = (f"{len(pusher.pushed)} ({pusher.rejected} rej)" if pusher else "-")
                landed = n + (len(pusher.pushed) if pusher else 0)
                print(f"{name:46} {elapsed:8.2f} {n / elapsed * 60:12.0f} {other:>14} "
                      f"{landed / elapsed * 60:11.0f}  {check(remote, pusher)}")
            extra = f", writer give-ups (engine retries) {gave_up}" if contended else ""
            print(f"  ratio writer / baseline ({label}): {b_time / w_time:.2f}{extra}")


if __name__ == "__main__":
    main()
