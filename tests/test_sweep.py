"""`babymerge sweep` and ``sweep()`` (``babymerge.sweep.runner``): each checkpoint read once
per pair, every cell equal to a separate lm_eval run, a rerun computes only new cells; bad
arguments, a read-only or a full disk are one line, exit 2, and a rerun with space resumes."""

import csv

import lm_eval
import pytest
from lm_eval.tasks import TaskManager

from babymerge.checkpoint import Checkpoint
from babymerge.cli import main
from babymerge.lm_eval_model import BabyMergeLM
from babymerge.sweep import read_cells, sweep

from conftest import tmpfs
from helpers.files import fill


@pytest.mark.slow
def test_sweep_loads_once_equals_separate_runs_and_resumes(toy, sweep_include, tmp_path, monkeypatch):
    opened = []
    original = Checkpoint.__init__

    def counting_init(self, path, role="checkpoint"):
        opened.append(role)
        original(self, path, role)

    monkeypatch.setattr(Checkpoint, "__init__", counting_init)
    tasks = ["mini_pairs", "winoground"]
    cells = sweep(toy.mm, toy.lang, [0.0, 1.0], tasks, tmp_path / "sweep", include_path=sweep_include, progress=False)
    assert len(cells) == 2 and sorted(opened) == ["language-only", "multimodal"]  # each checkpoint read once

    rows = list(csv.DictReader((tmp_path / "sweep" / "results.csv").open()))
    assert {r["task"] for r in rows} == {"mini_pairs", "winoground"}
    assert all(r["stderr"] != "" for r in rows if r["metric"] in ("acc", "group_score"))
    for alpha in (0.0, 1.0):  # the same cell evaluated from a fresh merge, as a separate lm_eval run would
        fresh = BabyMergeLM(pretrained=str(toy.mm), lang_ckpt=str(toy.lang), alpha=alpha)
        ref = lm_eval.simple_evaluate(model=fresh, tasks=tasks, task_manager=TaskManager(include_path=sweep_include))[
            "results"
        ]
        got = {(r["task"], r["metric"]): float(r["value"]) for r in rows if float(r["alpha"]) == alpha}
        assert got[("mini_pairs", "acc")] == ref["mini_pairs"]["acc,none"]
        for metric in ("text_score", "image_score", "group_score"):
            assert got[("winoground", metric)] == ref["winoground"][f"{metric},none"]

    opened.clear()
    cells = sweep(
        toy.mm, toy.lang, [0.0, 0.5, 1.0], tasks, tmp_path / "sweep", include_path=sweep_include, progress=False
    )
    assert len(cells) == 3 and [c["alpha"] for c in cells][-1] == 0.5  # only the new cell ran
    assert sorted(opened) == ["language-only", "multimodal"]
    for png in ("score_vs_alpha.png", "tradeoff.png"):
        assert (tmp_path / "sweep" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_sweep_argument_errors_are_one_line(sweep_runs, tmp_path, capsys):
    mm, lang, include = sweep_runs
    common = [
        "sweep",
        "--mm",
        str(mm),
        "--lang",
        str(lang),
        "--tasks",
        "mini_pairs",
        "--out",
        str(tmp_path / "s"),
        "--no-progress",
    ]
    cases = [
        (["--alphas", "0:1:0"], "--alphas '0:1:0': a range start:stop:step needs step > 0"),
        (["--alphas", "1:0:0.1"], "needs step > 0 and stop >= start"),
        (
            ["--include-path", include[0], "--model-args", "alpha=0.5"],
            "--model-args alpha=0.5: a sweep sets alpha itself; use --alphas",
        ),
        (["--include-path", include[0], "--model-args", "pretrained=x"], "use --mm instead"),
        (["--include-path", include[0], "--model-args", "dtype"], "--model-args takes KEY=VALUE pairs"),
        (["--include-path", str(tmp_path / "nowhere")], "is not a directory"),
        (["--include-path", include[0], "--limit", "0"], "--limit must be a positive number"),
    ]
    for extra, message in cases:
        assert main(common + extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("babymerge: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "s").exists()


def sweep_cli(runs, out, alphas: str) -> list[str]:
    """``babymerge sweep`` of one checkpoint; its arguments."""
    mm, lang, include = runs
    return ["sweep", "--mm", str(mm), "--lang", str(lang), "--tasks", "mini_pairs", "--include-path", include[0],
            "--checkpoints", "chck_1M", "--alphas", alphas, "--limit", "3", "--out", str(out), "--no-progress"]  # fmt: skip


def one_error_line(err: str) -> str:
    """The error's one line (lm-eval's progress bars may come before it)."""
    lines = [line for line in err.splitlines() if "error" in line.lower()]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("babymerge: error: "), err
    return lines[0]


@pytest.mark.slow
def test_a_read_only_out_is_one_line(sweep_runs, tmp_path, capsys):
    """A read-only --out (new or existing folder): one line naming it, exit 2, nothing written."""
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        assert main(sweep_cli(sweep_runs, ro / "s", "0")) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"cannot write output '{ro / 's'}': the file system is read-only; choose another --out" in line
        assert main(sweep_cli(sweep_runs, ro, "0")) == 2  # an existing folder on it
        line = one_error_line(capsys.readouterr().err)
        assert f"cannot create the lock file '{ro / '.sweep.lock'}': Read-only file system" in line
        assert list(ro.iterdir()) == []


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_a_rerun_recovers(sweep_runs, tmp_path, capsys):
    """A full disk: one line naming --out, exit 2, the earlier results unchanged and no temporaries;
    the rerun with space resumes."""
    with tmpfs(tmp_path / "disk", "8m") as disk:
        out = disk / "s"
        assert main(sweep_cli(sweep_runs, out, "0")) == 0
        before = {p.name: p.read_bytes() for p in out.iterdir() if p.name not in (".sweep.lock", ".claims")}
        filler = fill(disk)
        assert main(sweep_cli(sweep_runs, out, "0,1")) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"no space left on the device (or quota exceeded) while writing output '{out}'" in line
        assert {
            p.name: p.read_bytes() for p in out.iterdir() if p.name not in (".sweep.lock", ".claims")
        } == before  # no temporaries
        filler.unlink()
        assert main(sweep_cli(sweep_runs, out, "0,1")) == 0
        assert [(c["checkpoint"], c["alpha"]) for c in read_cells(out)] == [("chck_1M", 0.0), ("chck_1M", 1.0)]
