"""The README's examples run, and .ci/run runs the README's test command verbatim."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


CORE = [b for b in blocks("python") if "visattn.integrations" not in b]
INTEGRATIONS = [b for b in blocks("python") if "visattn.integrations" in b]  # run by tests/integration


@pytest.mark.parametrize("code", CORE, ids=lambda c: c.strip().splitlines()[-1][:40])
def test_readme_python_examples_run(code):
    exec(compile(code, "README.md", "exec"), {})


def test_integration_examples_are_shown():
    assert len(INTEGRATIONS) == 5  # YOLO, timm, smp, torchvision, mmdet config


def test_ci_runs_the_readme_test_command():
    commands = [line for b in blocks("bash") for line in b.splitlines() if line and not line.startswith("#")]
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text().splitlines()
