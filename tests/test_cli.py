"""The command line as a user runs it: the installed entry point, `python -m`, and typer's runner."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

import podyn_fast
from podyn_fast.cli import app


def test_version_from_the_installed_command() -> None:
    exe = shutil.which("podyn-fast") or str(Path(sys.executable).parent / "podyn-fast")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == f"podyn-fast {podyn_fast.__version__}"
    # The version lives in Cargo.toml only; the extension reports it.
    cargo = (Path(__file__).parents[1] / "Cargo.toml").read_text()
    assert f'version = "{podyn_fast.__version__}"' in cargo


def test_python_dash_m() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "podyn_fast", "--version"], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.startswith("podyn-fast ")


def test_help_and_no_arguments() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "DynamoDB" in result.output and "--version" in result.output
    # No arguments shows the help rather than doing anything.
    bare = runner.invoke(app, [])
    assert "Usage" in bare.output
    assert runner.invoke(app, ["--no-such-flag"]).exit_code != 0


def test_help_and_version_import_neither_botocore_nor_psycopg() -> None:
    # They cost most of the start-up time; only a command that reaches AWS or PostgreSQL needs them.
    check = (
        "import sys\n"
        "from podyn_fast.cli import app\n"
        "for args in (['--version'], ['--help'], ['migrate', '--help'], ['follow', '--help']):\n"
        "    try:\n"
        "        app(args)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, (args, e.code)\n"
        "print(sorted(m for m in ('botocore', 'psycopg') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
