"""schemathesis against the live service: every operation of schemas/openapi.yaml, all checks.

The service runs as ``reconciler serve`` with TLS and the real pipeline (tiny base
artifacts) and one published image, under the name the document gives as its example, so
GetPublishedImage/HeadPublishedImage find a file and not only 404s. Two adjustments, both
about facts JSON Schema cannot state:

- the test's copy of the schema narrows ``kernel``/``initramfs`` to this deployment's base
  artifact names, so generated builds really build;
- CreateBuild may still refuse schema-valid data with 400 for the overlay rules the
  schema cannot express (a path given twice, a path below a file), so 400 is an expected
  status of *positive_data_acceptance* for that one operation.

The queue is long enough that generated builds never meet a 503 (the bound has its own test).
The operations of a reconcile loop (the brake, the git webhook, the status pages and the fleet
API) answer 404 under ``reconciler serve`` alone whatever they are sent: 404 is what
*positive_data_acceptance* expects of them, and the warning that they only ever answer 404 is
off. The read-only ones run again in the service ``reconciler run`` embeds, with a FleetLink to
a state database the real engine populated with servers in every condition
(tests/fixtures/fleet_world.py), the document's HostName example among them, so GetHost and
GetHostPage find a server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reconciler.engine import brake
from reconciler.engine.statusview import status_record
from reconciler.paths import schemas_dir
from reconciler.web.images import publish
from tests.fixtures.fleet_world import fleet_in_every_condition, fleet_service
from tests.fixtures.kernel import debian_kernel
from tests.fixtures.service import base_images, make_tls, running_service
from tests.fixtures.tiny_initramfs import tiny_initramfs

pytestmark = pytest.mark.integration

CONFIG = """\
[[operations]]
include-operation-id = "CreateBuild"
checks.positive_data_acceptance.expected-statuses = ["2XX", "400"]

[[operations]]
include-operation-id = ["Pause", "Resume", "GitWebhook", "GetStatusPage", "GetHostPage",
                        "ListHosts", "GetHost", "GetRevision"]
checks.positive_data_acceptance.expected-statuses = ["404"]
warnings = false
"""


def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    images = base_images(
        tmp_path / "images",
        "amd64",
        kernel=debian_kernel("amd64"),
        initramfs=tiny_initramfs("amd64", tmp_path / "base.img"),
    )
    spec = yaml.safe_load((schemas_dir() / "openapi.yaml").read_text())
    image = tmp_path / "image.raw"
    image.write_bytes(bytes(range(256)) * 64)
    example = spec["paths"]["/images/{name}"]["parameters"][0]["example"]
    publish(image, images / "published", example)
    request = spec["components"]["schemas"]["BuildRequest"]["properties"]
    request["kernel"]["enum"] = ["vmlinuz-amd64"]
    request["initramfs"]["enum"] = ["initramfs-amd64.img"]
    request["architecture"] = {"type": "string", "enum": ["amd64"]}
    schema = tmp_path / "openapi.yaml"
    schema.write_text(yaml.safe_dump(spec))
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    tls = make_tls(tmp_path)
    with running_service(
        tmp_path / "svc", images=images, tls=tls, env={"RECONCILER_QUEUE_LENGTH": "100000"}
    ) as svc:
        argv = [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file", str(config),
            "run", str(schema),
            "--url", svc.url,
            "--checks", "all",
            "--max-examples", os.environ.get("SERVICE_SCHEMATHESIS_EXAMPLES", "30"),
            "--workers", "1",
            "--seed", "20261125",
            "--request-timeout", "30",
        ]  # fmt: skip
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=900, cwd=tmp_path
        )  # fmt: skip
        output = result.stdout + result.stderr
        print(output[-3000:])
        assert result.returncode == 0, output[-6000:]
        operations = sum(len([m for m in item if m != "parameters"])
                         for item in spec["paths"].values())
        assert f"{operations} selected / {operations} total" in output, output[-3000:]
        assert "No issues found" in output, output[-3000:]
        # Nothing the fuzzer sent may have crashed a handler.
        assert "Traceback" not in svc.log.read_text(), svc.log_tail(80)


# What a FleetLink serves read-only: the status pages and the fleet API.
FLEET_OPERATIONS = ("GetStatusPage", "GetHostPage", "ListHosts", "GetHost", "GetRevision")


def test_schemathesis_on_the_fleet_routes_with_a_populated_state(tmp_path: Path) -> None:
    spec = yaml.safe_load((schemas_dir() / "openapi.yaml").read_text())
    example = spec["components"]["parameters"]["HostName"]["example"]
    with fleet_in_every_condition(tmp_path) as world, fleet_service(tmp_path, world) as url:
        assert example in {h["name"] for h in status_record(world.data_dir)["hosts"]}
        brake.pause(world.data_dir, "cli:test", "schemathesis <b>run</b>")
        argv = [
            str(Path(sys.executable).parent / "schemathesis"),
            "run", str(schemas_dir() / "openapi.yaml"),
            "--url", url,
            "--checks", "all",
            "--max-examples", os.environ.get("SERVICE_SCHEMATHESIS_EXAMPLES", "30"),
            "--workers", "1",
            "--seed", "20261204",
            "--request-timeout", "30",
        ]  # fmt: skip
        for operation in FLEET_OPERATIONS:
            argv += ["--include-operation-id", operation]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    output = result.stdout + result.stderr
    print(output[-3000:])
    assert result.returncode == 0, output[-6000:]
    assert f"{len(FLEET_OPERATIONS)} selected /" in output, output[-3000:]
    assert "No issues found" in output, output[-3000:]
