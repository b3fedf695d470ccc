"""Running babymerge's commands and reading their errors."""

from babymerge.cli import main


def merge_cli(capsys, *argv):
    """``babymerge merge ARGV --no-progress`` in this process: (exit status, last line of stderr)."""
    rc = main(["merge", *map(str, argv), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err[-1] if err else ""


def error_lines(stderr: str) -> list[str]:
    """The ``babymerge: error:`` lines of a child's stderr, which holds no traceback."""
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("babymerge: error:")]
