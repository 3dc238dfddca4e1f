"""`.github/workflows/worker-image.yml` builds the worker image on a version tag and pushes it to the
repository owner's GHCR. Linted here without GitHub: against SchemaStore's GitHub-workflow schema (as
vendored by `check-jsonschema`, a `dev` dependency; `actionlint` downloads its binary from GitHub at
install, which this machine cannot reach), then for what this workflow must do.
Before, no workflow existed and `runpod up` defaulted to an image name no one had published."""

from __future__ import annotations

import json
import re
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "worker-image.yml"


def _load(text: str) -> dict[str, Any]:
    doc = yaml.safe_load(text)
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def _schema_errors(doc: dict[str, Any]) -> list[str]:
    pytest.importorskip("check_jsonschema", reason="check-jsonschema (the dev extra) vendors the schema")
    import jsonschema

    vendor = resources.files("check_jsonschema.builtin_schemas").joinpath("vendor")
    schema = json.loads(vendor.joinpath("github-workflows.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def _steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    [job] = doc["jobs"].values()
    return job["steps"]


def _step(doc: dict[str, Any], action: str) -> dict[str, Any]:
    [step] = [s for s in _steps(doc) if s.get("uses", "").startswith(action + "@")]
    return step


def test_the_workflow_follows_the_github_workflow_schema():
    assert _schema_errors(_load(WORKFLOW.read_text())) == []


def test_the_schema_check_catches_a_broken_workflow():
    broken = _load(WORKFLOW.read_text().replace("packages: write", "packages: writ"))
    assert any(e.startswith("permissions") for e in _schema_errors(broken))


def test_it_builds_on_a_tag_and_pushes_to_the_owners_ghcr():
    doc = _load(WORKFLOW.read_text())
    assert doc["on"]["push"] == {"tags": ["v*"]}
    assert doc["permissions"] == {"contents": "read", "packages": "write"}
    login = _step(doc, "docker/login-action")["with"]
    assert login == {
        "registry": "ghcr.io",
        "username": "${{ github.actor }}",
        "password": "${{ secrets.GITHUB_TOKEN }}",
    }
    [naming] = [s for s in _steps(doc) if s.get("id") == "image"]
    assert naming["env"]["OWNER"] == "${{ github.repository_owner }}"
    assert "ghcr.io/${OWNER,,}/sae-sweep-worker" in naming["run"]
    assert _step(doc, "docker/metadata-action")["with"]["images"] == "${{ steps.image.outputs.name }}"
    build = _step(doc, "docker/build-push-action")["with"]
    assert build["push"] is True and build["tags"] == "${{ steps.meta.outputs.tags }}"
    assert (ROOT / build["context"] / build["file"]).is_file()
    for step in _steps(doc):  # every action pinned to a major version
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]


def test_the_image_name_step_lowercases_the_owner(tmp_path):
    """The `run` line itself, in bash: GHCR refuses upper-case paths, owners may have them."""
    doc = _load(WORKFLOW.read_text())
    [naming] = [s for s in _steps(doc) if s.get("id") == "image"]
    output = tmp_path / "out"
    subprocess.run(
        ["bash", "-c", naming["run"]],
        env={"OWNER": "Some-Org", "GITHUB_OUTPUT": str(output), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert output.read_text() == "name=ghcr.io/some-org/sae-sweep-worker\n"


def test_the_dockerfile_copies_what_exists():
    """The build context has every path the Dockerfile copies (a moved file fails the tag's build)."""
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    sources = [
        src for line in dockerfile.splitlines() if line.startswith("COPY ") for src in line.split()[1:-1]
    ]
    assert "docker/entrypoint.sh" in sources
    missing = [s for s in sources if not (ROOT / s).exists()]
    assert missing == []
