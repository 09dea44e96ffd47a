"""The `visattn` command prints one row per block with numbers that agree with the library."""

import subprocess
import sys

import pytest
import torch

from visattn import count_macs, create_block, list_blocks
from visattn.app.cli import main


def test_table_lists_every_block_with_its_counts(capsys):
    assert main(["--size", "12x9", "--repeat", "1", "--dim", "32"]) == 0
    out = capsys.readouterr().out
    for name in list_blocks(paper_only=True):
        block = create_block(name, 32, 4)
        row = next(line for line in out.splitlines() if line.startswith(name + " "))
        params = f"{sum(p.numel() for p in block.parameters()):,}"
        gmacs = f"{count_macs(block, torch.randn(1, 12, 9, 32)).total / 1e9:.3f}"
        assert params in row and gmacs in row, row


def test_bad_arguments_fail_with_usage(capsys):
    with pytest.raises(SystemExit):
        main(["--size", "abc"])
    assert "size must look like" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--dim", "30"])
    assert "divisible by num_heads" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "visattn", "--size", "4", "--repeat", "1"], capture_output=True,
                         text=True, check=True).stdout
    assert "outlook" in out and "GMACs" in out


def test_models_table_reports_counts_beside_the_papers(capsys):
    assert main(["models", "litv2_*"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("litv2_s "))
    assert "27.84" in row and "3.72" in row and "82.0" in row
    assert "litv2_b @384" in out and "39.7" in out
    with pytest.raises(SystemExit):
        main(["models", "nothing*"])
