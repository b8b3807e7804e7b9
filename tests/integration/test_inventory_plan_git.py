"""``reconciler plan`` on a real git repository: added, changed, removed and colliding hosts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reconciler.adapters.git import GitInventory
from reconciler.cli import main
from reconciler.model.ipam import formula_offset
from tests.fixtures.inventory import InventoryRepo, files, server, system_id

pytestmark = pytest.mark.integration
BMC = "198.18.0.1:8000"


def _rival_of(n: int) -> str:
    """A system id whose IPAM slot equals lab host ``n``'s: a real collision."""
    wanted = formula_offset(BMC, system_id(n), 256)
    return next(f"rival-{i}" for i in range(10**6)
                if formula_offset(BMC, f"rival-{i}", 256) == wanted)


def _plan(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    code = main(["plan", "--repo", str(root), "--format", "json", *args])
    return code, json.loads(capsys.readouterr().out)


def _host(plan: dict[str, Any], name: str) -> dict[str, Any]:
    return next(h for h in plan["hosts"] if h["name"] == name)


def test_plan_across_commits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "inventory"
    root.mkdir()
    repo = InventoryRepo(root)
    slot = formula_offset(BMC, system_id(1), 256)
    docs: dict[str, Any] = {
        "node-a": server(1),
        "node-b": server(2),
        "node-c": server(3, state="inspected", interfaces=[
            {"mac": "52:54:00:18:00:03", "subnet": "lab", "address": "198.18.0.13"}]),
    }
    c1 = repo.commit(files(docs), "three servers")

    # Commit 2: a server whose formula slot is node-a's. Its name sorts first, so only the
    # git history (node-a was added earlier) keeps node-a where it is.
    rival = server(4, bmc={"address": f"http://{BMC}", "system_id": _rival_of(1),
                           "credentials": "lab-bmc"})
    docs["a-newcomer"] = rival
    c2 = repo.commit(files(docs), "add a colliding server")
    code, plan = _plan(root, capsys, "--base", c1, "--head", c2)
    assert code == 0
    assert plan["summary"]["added"] == 1 and plan["summary"]["changed"] == 0
    newcomer = _host(plan, "a-newcomer")
    assert newcomer["destructive"] is True
    assert newcomer["addresses"]["new"] == {"eth0": f"198.18.0.{slot + 1}"}
    assert [c["host"] for c in plan["collisions"]] == ["a-newcomer"]
    collision = plan["collisions"][0]
    assert collision["wanted"] == f"198.18.0.{slot}" and collision["new"] is True
    assert collision["blocked_by"] == [{"address": f"198.18.0.{slot}", "reason": "host node-a"}]

    # Commit 3: change an image (reprovision), a protected server's disk (blocked), the
    # profile's cmdline (rebuild only), and remove node-b.
    docs["node-a"] = server(1, image={"url": "http://198.18.0.1:8080/images/v2.qcow2",
                                      "sha256": "c" * 64})
    docs["node-c"] = {**docs["node-c"], "protected": True, "state": "provisioned",
                      "disk": {"wwn": "0x5000c500a1b2c3d4"}}
    del docs["node-b"]
    profiles = files({})["profiles.yaml"].decode().replace(
        "console=ttyS0,115200n8", "console=ttyS0,115200n8 quiet")
    c3 = repo.commit(files(docs, profiles=profiles), "image v2, protect c, drop b")
    code, plan = _plan(root, capsys, "--base", c2, "--head", c3)
    assert code == 0
    s = plan["summary"]
    assert (s["changed"], s["removed"], s["destructive"], s["blocked"]) == (3, 1, 1, 1)
    a = _host(plan, "node-a")
    assert a["destructive"] and a["actions"][0].startswith("reprovision (disk wipe)")
    assert a["actions"][0].endswith("(changed: image)") and a["workflow"] == "provision"
    assert {c["path"] for c in a["changes"]} == {"image.url", "image.sha256", "cmdline"}
    assert _host(plan, "node-b")["kind"] == "removed"
    c = _host(plan, "node-c")
    assert c["blocked"] and not c["destructive"]
    assert c["actions"][0].startswith("BLOCKED (protected): would provision (disk wipe)")
    assert c["hold"] == "Protected"
    newcomer = _host(plan, "a-newcomer")  # only the cmdline changed: no disk wipe
    assert not newcomer["destructive"] and newcomer["actions"] == [
        "provisioned: up to date",
        "boot image changes: used the next time a workflow boots the server"]

    # Markdown for the PR comment says the same.
    assert main(["plan", "--repo", str(root), "--base", c2, "--head", c3]) == 0
    md = capsys.readouterr().out
    assert "**1 DESTRUCTIVE** (disk wipe), 1 blocked (protected or over max_destructive)" in md
    assert "| `node-a` | changed |" in md and "**DESTRUCTIVE**" in md
    assert "- `image.url`: `http://198.18.0.1:8080/images/target.qcow2` → " in md

    # Commit 4: node-a leaves; the junior that probed past it moves back to its own slot.
    del docs["node-a"]
    c4 = repo.commit(files(docs, profiles=profiles), "retire node-a")
    code, plan = _plan(root, capsys, "--base", c3, "--head", c4)
    newcomer = _host(plan, "a-newcomer")
    assert newcomer["moved"] == {"eth0": {"old": f"198.18.0.{slot + 1}",
                                          "new": f"198.18.0.{slot}"}}
    assert newcomer["destructive"]
    assert plan["collisions"] == []

    # Default head is the working tree, default base is HEAD: an uncommitted broken file.
    (root / "servers" / "node-d.yaml").write_text("state: provisioned\nbmc: {}\n")
    code, plan = _plan(root, capsys)
    assert code == 1
    assert plan["base"] == c4 and plan["head"] == "WORKTREE"
    assert [p["text"] for p in plan["problems"]] == [
        "servers/node-d.yaml:2: bmc.address: required field is missing",
        "servers/node-d.yaml:2: bmc.credentials: required field is missing",
    ]


def test_seniority_from_history(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "inv").mkdir(parents=True)
    repo = InventoryRepo(root)
    inv = root / "inv"
    first = {f"inv/{k}": v for k, v in files({"zz": server(1)}).items()}
    repo.commit(first, "zz first")
    second = {**first, **{f"inv/{k}": v for k, v in files({"aa": server(2)}).items()}}
    repo.commit(second, "then aa")
    git_inv = GitInventory(inv)  # an inventory in a sub-directory of the repository
    ranks = git_inv.seniority("HEAD")
    assert ranks["zz"] < ranks["aa"]
    # Moving a file keeps its seniority; deleting and re-adding makes it the most junior.
    moved = {k.replace("servers/zz.yaml", "servers/rack1/zz.yaml"): v for k, v in second.items()}
    repo.commit(moved, "move zz into a rack directory")
    assert GitInventory(inv).seniority("HEAD")["zz"] == ranks["zz"]
    without = {k: v for k, v in moved.items() if "zz" not in k}
    repo.commit(without, "drop zz")
    repo.commit(moved, "zz is back")
    again = GitInventory(inv).seniority("HEAD")
    assert again["zz"] > again["aa"]
    snap = GitInventory(inv).snapshot("HEAD~1")
    assert sorted(snap.files) == ["profiles.yaml", "servers/aa.yaml", "subnets.yaml"]
