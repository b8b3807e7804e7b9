"""Hostile inventories (issue 12, points 1-4): an inventory is input from whoever opens a pull
request, and the reconcile loop reads it unattended. Whatever a repository holds, ``reconciler
validate`` never runs template code outside the sandbox, never reads outside the repository,
finishes in under 5 s and 300 MiB, and exits 1 with a ``file:line: ...`` line naming the file.

1. templates run in Jinja's immutable sandbox (the project's own too), bounded in time, output
   and memory; a refusal is a problem on the template's line;
2. symlinks (and submodules, FIFOs) are never followed or read, neither in the work tree nor
   in a git revision (blob modes);
3. YAML aliases are refused (billion laughs) and nesting is at most 64 deep;
4. sizes, totals and counts are checked before reading, and problems per file are capped;

and planted secrets never reach an output line on any of these paths.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.errors import InputError
from reconciler.model import desired_hosts, load_inventory, parse_inventory
from reconciler.render import RenderSettings, render_host, template_problems
from tests.fixtures.inventory import example_files, write

PROJECT_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
HEADER = "#cloud-config\n"  # so a refusal is on line 2 of templates/user-data.j2

# Templates that reach os through Python internals and would create MARKER.
ESCAPES = {
    "mro": "{% for c in ''.__class__.__mro__[1].__subclasses__() %}"
           "{% if c.__name__ == 'catch_warnings' %}"
           "{{ c()._module.__builtins__['__import__']('os').system('touch MARKER') }}"
           "{% endif %}{% endfor %}",
    "cycler globals": "{{ cycler.__init__.__globals__.os.system('touch MARKER') }}",
    "self globals": "{{ self.__init__.__globals__.__builtins__.__import__('os')"
                    ".system('touch MARKER') }}",
    "attr filter": "{{ (cycler|attr('__init__')|attr('__globals__'))['os']"
                   ".system('touch MARKER') }}",
}

# Templates that would take gigabytes or hours; each refused in well under a second.
AMPLIFIERS = {
    "string times a billion": "{{ 'x' * 10**9 }}",
    "a billion loop steps": "{% for i in range(10**9) %}x{% endfor %}",
    "ljust": "{{ 'x'.ljust(10**9) }}",
    "center filter": "{{ 'x'|center(1000000000) }}",
    "format width": "{{ '%0999999999d' % 1 }}",
    "str.format width": "{{ '{:>999999999}'.format(1) }}",
    "doubling in a namespace": "{% set ns = namespace(s='x') %}{% for i in range(40) %}"
                               "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    "macro buffers": "{% macro m() %}{% for i in range(100000) %}{{ 'x' * 100000 }}"
                     "{% endfor %}{% endmacro %}{{ m()|length }}",
    "join with a big separator": "{% set s = 'x' * 500000 %}{{ range(100000)|join(s) }}",
    "join of one value many times": "{% set s = 'x' * 500000 %}"
                                    "{{ ([none] * 100000)|map('default', s, true)|join }}",
    "big integer": "{{ 2 ** 100000000 }}",
    "sum of lists": "{{ ([[1]] * 20000)|sum(start=[]) }}",
    "output": "{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}",
    "filter block in a loop": "{% for i in range(100000) %}"
                              "{% filter replace('', 'x' * 500000) %}{% endfilter %}{% endfor %}",
}

SECRETS = ("hunter2-in-template", "hunter2-in-huge", "hunter2-in-bomb", "hunter2-in-deep",
           "hunter2-outside", "hunter2-in-url", "MIIEhunter2KEYBODY")
PRIVATE_KEY = ("-----BEGIN OPENSSH PRIVATE KEY-----\nMIIEhunter2KEYBODY\n"
               "-----END OPENSSH PRIVATE KEY-----\n")


def billion_laughs(extra: str = "") -> str:
    """Nine levels of nine aliases: 300 bytes of text, 10**9 values once built."""
    text = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        text += f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
    return text + extra


def _inventory(tmp_path: Path, extra: dict[str, bytes] | None = None) -> Path:
    root = tmp_path / "inv"
    root.mkdir()
    write(root, example_files() | (extra or {}))
    return root


def _validate(root: Path, capsys: pytest.CaptureFixture[str],
              *extra: str) -> tuple[int, list[str], str]:
    code = main(["validate", str(root), *extra])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def _template_problems(template: str, name: str = "user-data.j2") -> list[str]:
    files = example_files()
    files[f"templates/{name}"] = (HEADER + template + "\n").encode()
    inventory, problems = parse_inventory(files)
    assert problems == []
    return [str(p) for p in template_problems(inventory, desired_hosts(inventory))]


# -- 1. templates --------------------------------------------------------------------------


@pytest.mark.parametrize("escape", list(ESCAPES))
def test_template_cannot_reach_python(
    escape: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    template = HEADER + ESCAPES[escape].replace("MARKER", str(marker)) + "\n"
    root = _inventory(tmp_path, {"templates/user-data.j2": template.encode()})
    code, out, _ = _validate(root, capsys)
    assert not marker.exists()
    assert code == 1
    assert len(out) == 1
    assert out[0].startswith("templates/user-data.j2:2: refused: access to attribute '__")
    assert out[0].endswith("is unsafe.")


def test_project_templates_render_in_the_sandbox_too(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    project = tmp_path / "templates"
    project.mkdir()
    for name in ("user-data.j2", "network-config.j2"):
        (project / name).write_text((PROJECT_TEMPLATES / name).read_text())
    (project / "meta-data.j2").write_text(
        ESCAPES["cycler globals"].replace("MARKER", str(marker)) + "\n")
    host = desired_hosts(parse_inventory(example_files())[0])["lab-host-01"]
    with pytest.raises(InputError, match="refused: access to attribute '__init__'"):
        render_host(host, settings=RenderSettings(templates_dir=project))
    assert not marker.exists()


@pytest.mark.parametrize("amplifier", list(AMPLIFIERS))
def test_template_amplification_is_refused_quickly(amplifier: str) -> None:
    start = time.monotonic()
    problems = _template_problems(AMPLIFIERS[amplifier])
    assert time.monotonic() - start < 1.5
    assert len(problems) == 1
    assert problems[0].startswith("templates/user-data.j2:2: refused: ")


def test_template_time_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("reconciler.model.limits.RENDER_SECONDS", 0.3)
    start = time.monotonic()
    problems = _template_problems(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
    assert time.monotonic() - start < 1.5
    assert problems == ["templates/user-data.j2:2: refused: rendering took longer than the "
                        "0.3 s allowed"]


def test_the_whole_template_check_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # each render within its own budget, but all of them together not
    monkeypatch.setattr("reconciler.model.limits.CHECK_SECONDS", 0.0)
    monkeypatch.setattr("reconciler.model.limits.CHECK_SECONDS_PER_RENDER", 0.0)
    problems = _template_problems("{% for i in range(3) %}{{ i }}{% endfor %}", "meta-data.j2")
    assert problems == ["templates/meta-data.j2:1: refused: rendering every host took longer "
                        "than the 0 s allowed (0 s, and 0 ms a render)"]


def test_template_compile_cost_is_bounded() -> None:
    # 60,000 tokens would take 1 s and 250 MB to compile
    listed = _template_problems("{{ [" + "x, " * 30000 + "] }}")
    assert listed == ["templates/user-data.j2: the inventory's templates together are over "
                      "20,000 Jinja tokens: not compiled"]
    nested = _template_problems("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}")
    assert nested == ["templates/user-data.j2: template does not compile: RecursionError"]


def test_refusals_name_the_line_in_an_included_template() -> None:
    files = example_files()
    files["templates/user-data.j2"] = (HEADER + "{% include 'parts.j2' %}\n").encode()
    files["templates/parts.j2"] = b"a: 1\n\nb: {{ 'x' * 10**9 }}\n"
    inventory, _ = parse_inventory(files)
    problems = template_problems(inventory, desired_hosts(inventory))
    assert [str(p) for p in problems] == ["templates/parts.j2:3: refused: repeating a value "
                                          "past 1 MiB"]


def test_ordinary_template_features_still_render() -> None:
    template = HEADER + """\
{% macro item(k, v) %}{{ k }}: {{ v|tojson }}{% endmacro %}
{% set ns = namespace(n=0) %}
{% for k, v in cloud_config|dictsort %}{% set ns.n = ns.n + 1 %}{% endfor %}
keys: {{ ns.n }}
{{ item('host', hostname) }}
joined: "{{ ssh_keys|map('length')|join(',') }}"
padded: "{{ '%05d' % 42 }} {{ '{:>4}'.format('ab') }} {{ 'ab'|center(6) }}"
sum: {{ [1, 2, 3]|sum }}
nics: {{ host.interfaces|selectattr('primary')|map(attribute='name')|list|tojson }}
list: {{ range(3)|list }}
body: |
{{ 'a\\nb'|indent(2, true) }}
"""
    contents = example_files()
    contents["templates/user-data.j2"] = template.encode()
    inventory, problems = parse_inventory(contents)
    assert problems == []
    hosts = desired_hosts(inventory)
    assert template_problems(inventory, hosts) == []
    text = render_host(hosts["lab-host-01"], overrides=inventory.templates).user_data
    assert text.splitlines()[1:] == [
        "keys: 5", 'host: "lab-host-01"', 'joined: ""', 'padded: "00042   ab   ab  "',
        "sum: 6", 'nics: ["eth0"]', "list: [0, 1, 2]", "body: |", "  a", "  b"]


def test_calls_that_do_not_multiply_take_large_arguments() -> None:
    # two 20 KB strings: their product would be past 16 MiB, but neither call multiplies
    problems = _template_problems(
        "{% macro both(a, b) %}{{ a|length + b|length }}{% endmacro %}"
        "{% set a = 'a' * 20000 %}{% set b = 'b' * 20000 %}"
        "total: {{ both(a, b) }}\nsame: {{ (none|default(a)) == a }}\n"
        "parts: {{ a.partition(b)|length }}")
    assert problems == []


# -- 2. symlinks and other files that are not regular files --------------------------------


def test_worktree_symlinks_are_not_followed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "outside"
    (outside / "rack9").mkdir(parents=True)
    server = example_files()["servers/lab-host-01.yaml"].replace(b"LABDISK", b"OUTSIDE")
    (outside / "server.yaml").write_bytes(server)
    (outside / "rack9" / "lab-host-09.yaml").write_bytes(server)
    (outside / "meta-data.j2").write_text("outside: hunter2-outside\n")
    root = _inventory(tmp_path)
    (root / "servers" / "lab-host-08.yaml").symlink_to(outside / "server.yaml")
    (root / "servers" / "rack9").symlink_to(outside / "rack9")
    (root / "templates").mkdir()
    (root / "templates" / "meta-data.j2").symlink_to("../../outside/meta-data.j2")
    (root / "servers" / ".#lab-host-01.yaml").symlink_to("editor@host.1234")  # an Emacs lock
    code, out, _ = _validate(root, capsys)
    assert code == 1
    assert out == ["servers/lab-host-08.yaml: symlinks are not followed",
                   "servers/rack9: symlinks are not followed",
                   "templates/meta-data.j2: symlinks are not followed"]
    inventory, _ = load_inventory(root)
    assert sorted(inventory.servers) == ["lab-host-01", "lab-host-02", "lab-host-03"]
    assert inventory.rejected == {"lab-host-08"}
    assert inventory.templates == {}


def test_worktree_symlinked_shared_files_and_directories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = _inventory(tmp_path)
    (root / "subnets.yaml").rename(elsewhere / "subnets.yaml")
    (root / "subnets.yaml").symlink_to(elsewhere / "subnets.yaml")
    (root / "servers").rename(elsewhere / "servers")
    (root / "servers").symlink_to(elsewhere / "servers")
    code, out, _ = _validate(root, capsys)
    assert code == 1
    assert out == ["servers: symlinks are not followed",
                   "subnets.yaml: symlinks are not followed"]


def test_worktree_names_that_could_forge_a_report_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _inventory(tmp_path)
    (root / "servers" / "x.yaml\n- all good").write_text("state: off\n")
    (root / "servers" / b"\xff.yaml".decode("utf-8", "surrogateescape")).write_text("x: 1\n")
    code, out, _ = _validate(root, capsys)
    assert code == 1
    assert out == ["servers/\\xff.yaml: the name has control characters or is not UTF-8: not "
                   "read",
                   "servers/x.yaml\\x0a- all good: the name has control characters or is not "
                   "UTF-8: not read"]


def _git(root: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    return subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True,
                          text=True).stdout


def test_git_revision_never_reads_symlinks_or_submodules(tmp_path: Path) -> None:
    from reconciler.adapters.git import GitInventory
    from reconciler.commands.inventory import plan_revisions

    root = _inventory(tmp_path)
    _git(root, "init", "-q")
    (root / "servers" / "passwd.yaml").symlink_to("/etc/passwd")
    (root / "templates").mkdir()
    (root / "templates" / "user-data.j2").symlink_to("../../outside.j2")
    (root / "servers" / "rack9").symlink_to("/etc")
    _git(root, "add", "-A")
    # a submodule's gitlink (mode 160000), without cloning anything
    _git(root, "update-index", "--add", "--cacheinfo",
         f"160000,{'1' * 40},servers/rack7")
    _git(root, "commit", "-q", "-m", "hostile")
    modes = {line.split("\t")[1]: line.split()[0]
             for line in _git(root, "ls-tree", "-r", "HEAD").splitlines()}
    assert modes["servers/passwd.yaml"] == "120000"
    assert modes["servers/rack7"] == "160000"

    snap = GitInventory(root).snapshot("HEAD")
    assert sorted(snap.files) == ["profiles.yaml", "reconciler.yaml",
                                  "servers/lab-host-01.yaml", "servers/lab-host-02.yaml",
                                  "servers/lab-host-03.yaml", "subnets.yaml"]
    assert [str(p) for p in snap.refused] == [
        "servers/passwd.yaml: symlinks are not followed",
        "servers/rack7: submodules are not read",
        "servers/rack9: symlinks are not followed",
        "templates/user-data.j2: symlinks are not followed"]
    record = plan_revisions(root, "HEAD", "HEAD")["record"]
    assert "servers/passwd.yaml: symlinks are not followed" in [
        p["text"] for p in record["problems"]]


def test_git_blob_sizes_and_counts_are_checked_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reconciler.adapters.git import GitInventory

    root = _inventory(tmp_path, {"servers/big.yaml": b"state: off\n" + b"#" * 300_000 + b"\n"})
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "big")
    big = _git(root, "rev-parse", "HEAD:servers/big.yaml").strip()
    asked: list[str] = []
    read_blobs = GitInventory._read_blobs

    def recording(self: GitInventory, shas: list[str]) -> dict[str, bytes]:
        asked.extend(shas)
        return read_blobs(self, shas)

    monkeypatch.setattr(GitInventory, "_read_blobs", recording)
    snap = GitInventory(root).snapshot("HEAD")
    assert big not in asked and "servers/big.yaml" not in snap.files
    assert [str(p) for p in snap.refused] == [
        "servers/big.yaml: file is 300,012 bytes, more than the limit of 256 KiB"]
    monkeypatch.setattr("reconciler.model.limits.MAX_ENTRIES", 3)
    snap = GitInventory(root).snapshot("HEAD")
    assert sorted(snap.files) == ["profiles.yaml", "reconciler.yaml"]  # tree order
    assert [str(p) for p in snap.refused] == [
        "servers/big.yaml: file is 300,012 bytes, more than the limit of 256 KiB",
        "servers/lab-host-01.yaml: more than 3 files and directories in servers/, "
        "templates/ and inspection/: the rest is not read"]


# -- 3. YAML: aliases and nesting ----------------------------------------------------------


def test_yaml_alias_bomb_is_refused_before_it_is_built() -> None:
    files = example_files()
    files["servers/bomb.yaml"] = billion_laughs("state: off\n").encode()
    start = time.monotonic()
    inventory, problems = parse_inventory(files)
    assert time.monotonic() - start < 1.0
    assert [str(p) for p in problems] == ["servers/bomb.yaml:2: YAML aliases are not allowed"]
    assert "bomb" in inventory.rejected


@pytest.mark.parametrize("text, line", [
    ("a: &x 1\nb: *x\n", 2),  # a scalar
    ("base: &b {state: off}\nother:\n  <<: *b\n", 3),  # a merge key
    ("a: &x [1, *x]\n", 1),  # a recursive one
])
def test_every_alias_is_refused(text: str, line: int) -> None:
    files = example_files()
    files["servers/n1.yaml"] = text.encode()
    _, problems = parse_inventory(files)
    assert [str(p) for p in problems] == [f"servers/n1.yaml:{line}: YAML aliases are not "
                                          "allowed"]


@pytest.mark.parametrize("text, line", [
    ("a: " + "[" * 900 + "]" * 900 + "\n", 1),  # flow: libyaml nests up to 1,000
    ("".join(" " * i + f"k{i}:\n" for i in range(100)), 65),  # block
    ("".join(" " * (2 * i) + f"- k{i}:\n" for i in range(40)), 33),  # lists of mappings
])
def test_deep_nesting_is_a_problem_not_a_recursion_error(text: str, line: int) -> None:
    files = example_files()
    files["servers/deep.yaml"] = text.encode()
    _, problems = parse_inventory(files)
    assert [str(p) for p in problems] == [
        f"servers/deep.yaml:{line}: nested deeper than 64 levels of mappings and lists"]


@pytest.mark.parametrize("text, message", [
    ("state: " + "1" * 5000 + "\n", "Exceeds the limit (4300 digits) for integer string "
     "conversion: value has 5000 digits"),  # the fast reader's path
    ("bmc: {port: " + "1" * 5000 + "}\n", "Exceeds the limit (4300 digits) for integer "
     "string conversion: value has 5000 digits"),  # libyaml's
    ("state: 2024-13-45\n", "month must be in 1..12"),
])
def test_values_python_cannot_build_are_problems_not_tracebacks(text: str, message: str) -> None:
    files = example_files()
    files["servers/n1.yaml"] = text.encode()
    _, problems = parse_inventory(files)
    assert [str(p) for p in problems] == [f"servers/n1.yaml: YAML value that cannot be read: "
                                          f"{message}"]


def test_keys_that_are_not_strings_are_problems_not_tracebacks() -> None:
    files = example_files()
    files["servers/n1.yaml"] = b"state: 'off'\n1: x\nbmc: {2: x}\n"  # the Rust engine raises
    _, problems = parse_inventory(files)
    assert problems and {p.file for p in problems} == {"servers/n1.yaml"}


# -- 4. sizes, totals, counts ---------------------------------------------------------------


def test_oversized_files_are_refused_before_they_are_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = b"state: off\n# password: hunter2-in-huge\n" + b"#" * 300_000
    template = HEADER.encode() + b"{# " + b"x" * 300_000 + b" #}\n"
    root = _inventory(tmp_path, {"servers/big.yaml": big, "templates/user-data.j2": template})
    with open(root / "servers" / "sparse.yaml", "wb") as f:
        f.truncate(1 << 32)  # 4 GiB that take no disk: reading it would take the memory
    code, out, _ = _validate(root, capsys)
    assert code == 1
    assert out == [
        f"servers/big.yaml: file is {len(big):,} bytes, more than the limit of 256 KiB",
        "servers/sparse.yaml: file is 4,294,967,296 bytes, more than the limit of 256 KiB",
        f"templates/user-data.j2: file is {len(template):,} bytes, more than the limit of "
        "256 KiB"]


def test_repository_totals_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _inventory(tmp_path)
    monkeypatch.setattr("reconciler.model.limits.MAX_ENTRIES", 2)
    assert _validate(root, capsys)[1] == [
        "servers/: more than 2 files and directories in servers/, templates/ and "
        "inspection/: the rest is not read"]
    monkeypatch.setattr("reconciler.model.limits.MAX_ENTRIES", 100)
    monkeypatch.setattr("reconciler.model.limits.MAX_TOTAL_BYTES", 3000)
    assert _validate(root, capsys)[1] == [
        "servers/lab-host-02.yaml: the inventory's files together are over the limit of "
        "3,000 bytes: this file and the rest are not read"]
    monkeypatch.setattr("reconciler.model.limits.MAX_TOTAL_BYTES", 1 << 20)
    monkeypatch.setattr("reconciler.model.limits.MAX_YAML_NODES", 100)
    code, out, _ = _validate(root, capsys)
    assert code == 1
    assert len(out) == 1
    assert out[0].startswith("servers/lab-host-0")
    assert out[0].endswith(": the inventory's YAML files together have more than 100 values: "
                           "this file and the rest are not read")
    monkeypatch.setattr("reconciler.model.limits.MAX_DIRECTORY_DEPTH", 2)
    (root / "servers" / "a" / "b").mkdir(parents=True)
    assert "servers/a/b/: directories nested deeper than 2 levels are not read" in \
        _validate(root, capsys)[1]


def test_problems_per_file_are_capped() -> None:
    files = example_files()
    files["servers/n1.yaml"] = ("state: off\n" + "".join(
        f"field{i}: {i}\n" for i in range(500))).encode()
    _, problems = parse_inventory(files)
    mine = [str(p) for p in problems if p.file == "servers/n1.yaml"]
    assert len(mine) == 51
    assert "servers/n1.yaml: more problems in this file are not shown (the first 50 are)" \
        in mine


# -- secrets on every hostile path --------------------------------------------------------


def test_planted_secrets_never_reach_the_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "outside.yaml").write_text("password: hunter2-outside\n")
    huge = ("password: hunter2-in-huge\n" + PRIVATE_KEY + "#" * 300_000 + "\n").encode()
    root = _inventory(tmp_path, {
        "templates/user-data.j2": (HEADER + "password: hunter2-in-template\n"
                                   + "{{ ''.__class__ }}\n" + PRIVATE_KEY).encode(),
        "templates/meta-data.j2": b"url: {{ 'http://admin:hunter2-in-url@h/' ~ 10**9 }}\n",
        "servers/huge.yaml": huge,
        "servers/bomb.yaml": billion_laughs("bmc: {password: hunter2-in-bomb}\n").encode(),
        "servers/deep.yaml": ("password: hunter2-in-deep\nx: " + "[" * 100 + "]" * 100
                              + "\n").encode(),
    })
    (root / "servers" / "link.yaml").symlink_to(tmp_path / "outside.yaml")
    code, out, err = _validate(root, capsys)
    assert code == 1
    assert out == [
        "servers/bomb.yaml:2: YAML aliases are not allowed",
        "servers/deep.yaml:2: nested deeper than 64 levels of mappings and lists",
        f"servers/huge.yaml: file is {len(huge):,} bytes, more than the limit of 256 KiB",
        "servers/link.yaml: symlinks are not followed",
        "templates/meta-data.j2:1: looks like a URL with a password: keep secrets out of the "
        "repository; name a credentials reference instead",
        "templates/user-data.j2:2: looks like a password: keep secrets out of the repository; "
        "name a credentials reference instead",
        "templates/user-data.j2:4: looks like a private key: keep secrets out of the "
        "repository; name a credentials reference instead"]
    code, json_out, json_err = _validate(root, capsys, "--format", "json")
    for text in (*out, err, *json_out, json_err):
        assert not any(secret in text for secret in SECRETS), text


# -- all of it at once, as a separate process: 5 s, 300 MiB --------------------------------


def _hostile_tree(tmp_path: Path, template: str, marker: Path) -> Path:
    dense = "".join(f"      - {{a{j}: b{j}}}\n" for j in range(12_000))
    root = _inventory(tmp_path, {
        "servers/bomb.yaml": billion_laughs("state: off\n").encode(),
        "servers/deep.yaml": ("x: " + "[" * 900 + "]" * 900 + "\n").encode(),
        "servers/block.yaml": "".join(" " * i + f"k{i}:\n" for i in range(700)).encode(),
        "servers/many.yaml": "".join(f"f{i}: {i}\n" for i in range(20_000)).encode(),
        "templates/user-data.j2": (HEADER + template.replace("MARKER", str(marker))
                                   + "\n").encode(),
    } | {f"servers/dense{i}.yaml": ("state: off\ncloud_init:\n  user_data:\n    x:\n"
                                    + dense).encode() for i in range(3)})
    with open(root / "servers" / "sparse.yaml", "wb") as f:
        f.truncate(1 << 32)
    os.mkfifo(root / "servers" / "fifo.yaml")  # reading it would block forever
    (root / "servers" / "passwd.yaml").symlink_to("/etc/passwd")
    return root


def _limit_memory() -> None:
    limit = 300 * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.parametrize("template", [
    ESCAPES["mro"],
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    AMPLIFIERS["macro buffers"],
], ids=["escape", "slow", "memory"])
def test_validate_of_a_hostile_inventory_within_5s_and_300MiB(
    template: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    root = _hostile_tree(tmp_path, template, marker)
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from reconciler.cli import main; "
         "sys.exit(main(['validate', sys.argv[1]]))", str(root)],
        capture_output=True, text=True, timeout=5, preexec_fn=_limit_memory,
        stdin=subprocess.DEVNULL)
    assert time.monotonic() - start < 5
    assert proc.returncode == 1, proc.stderr
    assert not marker.exists()
    out = proc.stdout.splitlines()
    for line in ("servers/bomb.yaml:2: YAML aliases are not allowed",
                 "servers/deep.yaml:1: nested deeper than 64 levels of mappings and lists",
                 "servers/block.yaml:65: nested deeper than 64 levels of mappings and lists",
                 "servers/fifo.yaml: not a regular file",
                 "servers/passwd.yaml: symlinks are not followed",
                 "servers/sparse.yaml: file is 4,294,967,296 bytes, more than the limit of "
                 "256 KiB"):
        assert line in out
    assert any(line.startswith("templates/user-data.j2:2: refused: ") for line in out), out
    assert len([line for line in out if line.startswith("servers/many.yaml")]) == 51
