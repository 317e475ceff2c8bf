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


def test_usage_errors_are_one_line_with_exit_code_2():
    """argparse's own errors (missing, unknown and malformed arguments) as the real process reports them."""
    for argv, message in ((["run"], "genrt run: error: the following arguments are required: DIR, --out"),
                          (["export", "ldm", "--seed", "x"], "genrt export: error: argument --seed: invalid int value"),
                          (["build", "DIR", "--frob"], "genrt build: error: unrecognized arguments: --frob")):
        result = subprocess.run([sys.executable, "-m", "genrt.cli", *argv], capture_output=True, text=True)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(message), result.stderr
        assert lines[0].endswith(f"(fix: see `genrt {argv[0]} --help`)") and result.stdout == ""
