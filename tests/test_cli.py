import subprocess
import sys

import genrt
from genrt.cli import main


def test_version_flag_prints_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"genrt {genrt.__version__}"


def test_console_entry_point_help_exits_zero():
    result = subprocess.run([sys.executable, "-m", "genrt.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "usage: genrt" in result.stdout
