"""Running babymerge's commands (and ``lm_eval --model babymerge``) and reading their errors."""

import sys

from babymerge.cli import main

from conftest import REPO

LM_EVAL = (sys.executable, "-m", "lm_eval")  # the `lm_eval` program of this interpreter, whatever PATH says


def lm_eval_command(model_args, tasks, *, include=REPO / "lm_eval_tasks", out=None, limit=None, batch_size="auto",
                    log_samples=True, launcher=LM_EVAL) -> list[str]:  # fmt: skip
    """``lm_eval --model babymerge ...`` as a user types it, on the CPU (``launcher``: the program,
    e.g. under torchrun)."""
    cmd = [*launcher, "--model", "babymerge", "--model_args", model_args,
           "--tasks", tasks if isinstance(tasks, str) else ",".join(tasks), "--include_path", str(include),
           "--device", "cpu", "--batch_size", str(batch_size)]  # fmt: skip
    if limit is not None:
        cmd += ["--limit", str(limit)]
    if out is not None:
        cmd += ["--output_path", str(out)]
    return cmd + ["--log_samples"] if log_samples else cmd


def merge_cli(capsys, *argv):
    """``babymerge merge ARGV --no-progress`` in this process: (exit status, last line of stderr)."""
    rc = main(["merge", *map(str, argv), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err[-1] if err else ""


def error_lines(stderr: str) -> list[str]:
    """The ``babymerge: error:`` lines of a child's stderr, which holds no traceback."""
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("babymerge: error:")]
