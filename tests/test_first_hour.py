"""What a new user meets first: the version, help text that runs as printed, a quiet training run, honest errors."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import visattn
from visattn.app.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"visattn {visattn.__version__}"


def test_help_examples_are_valid_shell(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    lines = text[text.index("e.g. --set"):].splitlines()
    example = " ".join([lines[0]] + [line.strip() for line in lines[1:] if line.startswith(" " * 20)][:1])
    words = shlex.split(example.removeprefix("e.g. "))  # raises on a shell syntax error
    assert words == ["--set", "embed_dim=32", "--set", "depths=(1,1,1,1)"]


def test_a_training_run_prints_no_warning(tmp_path):
    pytest.importorskip("sklearn")
    r = subprocess.run([sys.executable, "-W", "always", "-m", "visattn", "train", "--model", "litv2_s", "--set",
                        "embed_dim=8", "--set", "depths=(1,1,1,1)", "--set", "num_heads=(1,1,2,4)", "--epochs", "1",
                        "--quiet", "--output", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Warning" not in r.stderr, r.stderr[-2000:]


def test_what_ships_is_documented():
    text = (Path(visattn.__file__).resolve().parents[2] / "README.md").read_text()
    for name in visattn.__all__:
        if name[0].isupper() or name in ("create_block", "list_blocks", "register_block", "register_model"):
            assert f"`{name}" in text or f"{name}(" in text or f".{name}" in text, f"{name} is not in the README"
