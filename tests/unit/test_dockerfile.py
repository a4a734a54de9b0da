"""The Dockerfile: hadolint-clean, multi-stage, pinned, non-root, the operator as entrypoint.

No container engine runs here, so the image is linted and read, not built.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib

from tests.unit.tools import REPO, hadolint

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(instruction)
    return out


def test_hadolint_passes() -> None:
    proc = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "", proc.stdout


def test_multi_stage_with_pinned_base() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    for stage in all_stages:
        image = stage[0][1].split()[0]
        _, _, tag = image.partition(":")
        assert tag and tag != "latest", image
        # An exact patch release (3.12.12), not a moving tag like 3.12 or 3-slim.
        assert re.match(r"\d+\.\d+\.\d+-", tag), image
    bases = {stage[0][1].split()[0] for stage in all_stages}
    assert len(bases) == 1, "build and runtime stages should share the base (the venv is copied)"


def test_build_stage_makes_a_wheel_into_a_venv() -> None:
    build = " ".join(args for _, args in stages()[0])
    assert "pip wheel" in build and "venv" in build
    for _, args in instructions():
        if "pip " in args and " install" in args:
            assert "--no-cache-dir" in args, args


def test_runtime_stage() -> None:
    runtime = stages()[-1]
    words = [w for w, _ in runtime]
    assert "RUN" not in words, "the runtime stage should only copy the built virtualenv"
    (user,) = [a for w, a in runtime if w == "USER"]
    assert user.split(":")[0] == "65532"
    (entrypoint,) = [a for w, a in runtime if w == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["simtask-operator"]
    (expose,) = [a for w, a in runtime if w == "EXPOSE"]
    assert set(expose.split()) == {"8000", "8080"}
    # The USER comes before the ENTRYPOINT and nothing after it switches back.
    assert words.index("USER") < words.index("ENTRYPOINT")


def test_entrypoint_is_the_console_script() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "simtask-operator" in project["scripts"]


def test_build_context_has_what_the_build_copies() -> None:
    ignore = DOCKERIGNORE.read_text().splitlines()
    assert "*" in ignore, ".dockerignore should let in only what the build needs"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = []
    for word, args in instructions():
        if word == "COPY" and "--from=" not in args:
            copied += args.split()[:-1]
    assert copied
    for source in copied:
        source = source.rstrip("/")
        assert source in allowed, f"COPY {source} is excluded by .dockerignore"
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    assert not {".git", ".testbed", "tests"} & allowed
