"""`babymerge sweep` across word-count checkpoints, and what keeps a sweep folder honest: recorded
settings, cells claimed by one process at a time, a damaged cells.jsonl, errors for bad arguments and tasks that would
silently come from the hub."""

import csv
import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lm_eval.tasks import TaskManager

from babymerge import BabyMergeError
from babymerge.cli import main
from babymerge.sweep import (
    CELLS,
    append_cell,
    check_tasks_are_local,
    checkpoint_pairs,
    default_include_path,
    parse_alphas,
    read_cells,
    sweep,
)
from babymerge.sweep.workers import claim_path

from conftest import REPO, tmpfs, write_pairs_task

pytestmark = pytest.mark.slow  # its module fixtures train nothing but run sweeps with lm_eval

PAIRS = [("The dog sees the cat.", "The dog see the cat."), ("A girl likes the ball.", "A girl like the ball."),
         ("Some boys help the teacher.", "Some boys helps the teacher.")]  # fmt: skip
# (name, words_seen in the multimodal run's trainer_state, in the language-only run's; None: no trainer_state)
WORD_CHECKPOINTS = [
    ("chck_2M", 2_000_517, 2_003_210),
    ("chck_1M", 1_000_104, None),
    ("chck_10M", 10_001_000, 10_000_020),
]


def write_tasks(root: Path) -> Path:
    return write_pairs_task(root, PAIRS)


def fake_run(root: Path, source: Path, role: int) -> Path:
    """A training run of word-count checkpoints (copies of a toy checkpoint) and one epoch checkpoint."""
    for i, (name, *words) in enumerate(WORD_CHECKPOINTS + [("ckpt-ep1", 12_345_678, 12_000_000)]):
        shutil.copytree(source, root / name)
        if words[role] is not None:
            (root / name / "trainer_state.json").write_text(
                json.dumps({"global_step": 10 * (i + 1), "words_seen": words[role]})
            )
    return root


@pytest.fixture(scope="module")
def runs(toy, tmp_path_factory):
    root = tmp_path_factory.mktemp("word_runs")
    return fake_run(root / "mm", toy.mm, 0), fake_run(root / "lang", toy.lang, 1), [str(write_tasks(root))]


@pytest.fixture(scope="module")
def swept(runs, tmp_path_factory):
    """One sweep over the three word-count checkpoints and two alphas."""
    mm, lang, include = runs
    out = tmp_path_factory.mktemp("swept") / "sweep"
    cells = sweep(
        mm, lang, [0.0, 1.0], ["mini_pairs"], out, checkpoints="words", include_path=include, limit=3, progress=False
    )
    return out, cells


def test_word_count_checkpoints_pair_by_words_seen_in_training_order(runs):
    mm, lang, _ = runs
    # chck_1M of the language-only run has no trainer_state.json: paired by its name's 1M
    pairs = checkpoint_pairs(mm, lang)
    assert [(n, m.parent.name, l.parent.name) for n, m, l in pairs] == [
        ("chck_1M", "mm", "lang"),
        ("chck_2M", "mm", "lang"),
        ("chck_10M", "mm", "lang"),
        ("ckpt-ep1", "mm", "lang"),
    ]
    assert all(m.name == l.name == n for n, m, l in pairs)
    assert [n for n, _, _ in checkpoint_pairs(mm, lang, "words")] == ["chck_1M", "chck_2M", "chck_10M"]
    assert [n for n, _, _ in checkpoint_pairs(mm, lang, "latest")] == ["ckpt-ep1"]


def test_word_checkpoints_with_another_spelling_still_pair(tmp_path):
    for run, name in (("mm", "chck_10M"), ("mm", "chck_1M"), ("lang", "chck_10.0M"), ("lang", "chck_1M")):
        (tmp_path / run / name).mkdir(parents=True)
        (tmp_path / run / name / "config.json").write_text("{}")
    (tmp_path / "mm" / ".chck_20M.tmp-x").mkdir()  # a checkpoint being written: not a checkpoint
    (tmp_path / "mm" / ".chck_20M.tmp-x" / "config.json").write_text("{}")
    pairs = checkpoint_pairs(tmp_path / "mm", tmp_path / "lang")
    assert [(n, l.name) for n, _, l in pairs] == [("chck_1M", "chck_1M"), ("chck_10M", "chck_10.0M")]


def test_sweep_csv_has_words_seen_and_one_row_per_cell(swept):
    out, cells = swept
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert list(rows[0]) == ["checkpoint", "words_seen", "alpha", "task", "metric", "filter", "value", "stderr"]
    acc = [(r["checkpoint"], int(r["words_seen"]), float(r["alpha"])) for r in rows if r["metric"] == "acc"]
    # a word-count pair sits at its milestone on the words axis (the two runs' exact counts differ)
    assert acc == [("chck_1M", 1_000_000, 0.0), ("chck_1M", 1_000_000, 1.0), ("chck_2M", 2_000_000, 0.0),
                   ("chck_2M", 2_000_000, 1.0), ("chck_10M", 10_000_000, 0.0), ("chck_10M", 10_000_000, 1.0)]  # fmt: skip
    # every checkpoint is a copy of the same weights: the same alpha gives the same score
    by_alpha = {}
    for r in rows:
        by_alpha.setdefault((r["alpha"], r["metric"]), set()).add(r["value"])
    assert all(len(v) == 1 for v in by_alpha.values())
    settings = json.loads((out / "sweep.json").read_text())
    assert settings["tasks"] == ["mini_pairs"] and settings["limit"] == 3 and settings["alphas"] == [0.0, 1.0]
    assert settings["checkpoints"]["chck_2M"]["mm_words_seen"] == 2_000_517
    assert settings["checkpoints"]["chck_2M"]["lang_words_seen"] == 2_003_210
    assert settings["checkpoints"]["chck_1M"]["lang_words_seen"] == 1_000_000  # from the name
    assert (out / "score_vs_words.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_words_plot_is_log_scale_one_line_per_alpha(swept, monkeypatch):
    from babymerge.sweep import plots, tidy_rows

    out, cells = swept
    figures = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.setdefault(path.name, fig))
    rows = [r for c in cells for r in tidy_rows(c["checkpoint"], c["alpha"], c["results"], c["words_seen"])]
    plots.plot(out, rows, ["mini_pairs"])
    ax = figures["score_vs_words.png"].axes[0]
    assert ax.get_xscale() == "log" and ax.get_title() == "mini_pairs: acc"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["alpha=0", "alpha=1"]
    for line in ax.get_lines()[:2]:
        assert list(line.get_xdata()) == [1_000_000, 2_000_000, 10_000_000]
    assert "score_vs_alpha.png" in figures


def test_resume_with_other_settings_is_refused_saying_what_differs(swept, runs, toy, tmp_path):
    out, _ = swept
    mm, lang, include = runs
    before = (out / CELLS).read_bytes()
    run = dict(checkpoints="words", include_path=include, limit=3, progress=False)
    cases = [
        (dict(run, limit=2), r"limit: recorded 3, now 2"),
        (dict(run, model_args={"dtype": "bfloat16"}), r"model_args: recorded \{\}, now \{'dtype': 'bfloat16'\}"),
    ]
    for kwargs, message in cases:
        with pytest.raises(BabyMergeError, match=message + r".*new `out`"):
            sweep(mm, lang, [0.0, 1.0], ["mini_pairs"], out, **kwargs)
    with pytest.raises(BabyMergeError, match=r"tasks: recorded \['mini_pairs'\], now \['mini_pairs', 'other'\]"):
        (Path(include[0]) / "other.yaml").write_text(
            (Path(include[0]) / "mini_pairs.yaml").read_text().replace("mini_pairs", "other")
        )
        try:
            sweep(mm, lang, [0.0], ["mini_pairs", "other"], out, **run)
        finally:
            (Path(include[0]) / "other.yaml").unlink()
    other_lang = fake_run(tmp_path / "lang2", toy.base, 1)  # same checkpoint names, other weights
    with pytest.raises(
        BabyMergeError, match=r"lang_run: recorded .*checkpoint chck_1M \(lang\): .* its weights changed"
    ):
        sweep(mm, other_lang, [0.0], ["mini_pairs"], out, **run)
    assert (out / CELLS).read_bytes() == before  # nothing evaluated, nothing appended


def test_a_cell_another_process_holds_is_left_to_it(runs, tmp_path):
    """Sweeps with the same settings share a folder (ranks, shards): a cell whose claim another
    process holds is not computed again; once the holder dies, the OS frees the claim."""
    mm, lang, include = runs
    out = tmp_path / "sweep"
    run = dict(checkpoints="chck_1M,chck_2M", include_path=include, limit=3, progress=False)
    out.mkdir()
    (out / ".claims").mkdir()
    claim = claim_path(out, "chck_1M", 1.0)
    holder = subprocess.Popen(  # another process computing that cell, as a running sweep's worker does
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('locked', flush=True); time.sleep(60)", str(claim)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        cells = sweep(mm, lang, [0.0, 1.0], ["mini_pairs"], out, **run)
    finally:
        holder.kill()
        holder.wait()
    everyone = [("chck_1M", 0.0), ("chck_1M", 1.0), ("chck_2M", 0.0), ("chck_2M", 1.0)]
    assert sorted((c["checkpoint"], c["alpha"]) for c in cells) == [c for c in everyone if c != ("chck_1M", 1.0)]
    with open(claim, "a") as f:  # released by the OS when its holder died
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    cells = sweep(mm, lang, [0.0, 1.0], ["mini_pairs"], out, **run)
    lines = [json.loads(line) for line in (out / CELLS).read_text().splitlines()]
    assert [(c["checkpoint"], c["alpha"]) for c in lines][-1] == ("chck_1M", 1.0)  # only it was computed
    assert sorted((c["checkpoint"], c["alpha"]) for c in lines) == everyone


def test_damaged_cells_are_skipped_with_a_warning_and_recomputed(runs, tmp_path):
    mm, lang, include = runs
    out = tmp_path / "sweep"
    run = dict(checkpoints="chck_1M,chck_2M", include_path=include, limit=3, progress=False)
    sweep(mm, lang, [0.0, 1.0], ["mini_pairs"], out, **run)
    original = list(csv.DictReader((out / "results.csv").open()))
    lines = (out / CELLS).read_text().splitlines()
    assert len(lines) == 4
    # line 2 replaced by a JSON array, line 4 cut mid-way by a crash (no newline at the end)
    (out / CELLS).write_text(lines[0] + "\n" + "[1, 2]\n" + lines[2] + "\n" + lines[3][: len(lines[3]) // 2])
    with pytest.warns(UserWarning, match=r"cells.jsonl line \d is not a finished cell") as record:
        cells = sweep(mm, lang, [0.0, 1.0], ["mini_pairs"], out, **run)
    assert sorted(str(w.message).split(" line ")[1][0] for w in record if "finished cell" in str(w.message)) == [
        "2",
        "4",
    ]
    assert sorted((c["checkpoint"], c["alpha"]) for c in cells) == [
        ("chck_1M", 0.0),
        ("chck_1M", 1.0),
        ("chck_2M", 0.0),
        ("chck_2M", 1.0),
    ]
    new_lines = (out / CELLS).read_text().split("\n")
    assert new_lines[3] == lines[3][: len(lines[3]) // 2] and new_lines[-1] == ""  # the cut line stays on its own line
    redone = [json.loads(line) for line in new_lines[4:-1]]
    assert sorted((c["checkpoint"], c["alpha"]) for c in redone) == [("chck_1M", 1.0), ("chck_2M", 1.0)]
    assert list(csv.DictReader((out / "results.csv").open())) == original  # the same rows, once each


def test_sweep_argument_errors_are_one_line(runs, tmp_path, capsys):
    mm, lang, include = runs
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


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` up but ``leave`` bytes (whole pages); the filler file."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"x" * 4096)
        except OSError:
            pass
    os.truncate(filler, filler.stat().st_size - leave)
    return filler


def test_a_read_only_out_is_one_line(runs, tmp_path, capsys):
    """A read-only --out (new or existing folder): one line naming it, exit 2, nothing written."""
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        assert main(sweep_cli(runs, ro / "s", "0")) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"cannot write output '{ro / 's'}': the file system is read-only; choose another --out" in line
        assert main(sweep_cli(runs, ro, "0")) == 2  # an existing folder on it
        line = one_error_line(capsys.readouterr().err)
        assert f"cannot create the lock file '{ro / '.sweep.lock'}': Read-only file system" in line
        assert list(ro.iterdir()) == []


def test_a_full_disk_is_one_line_and_a_rerun_recovers(runs, tmp_path, capsys):
    """A full disk: one line naming --out, exit 2, the earlier results unchanged and no temporaries;
    the rerun with space resumes."""
    with tmpfs(tmp_path / "disk", "8m") as disk:
        out = disk / "s"
        assert main(sweep_cli(runs, out, "0")) == 0
        before = {p.name: p.read_bytes() for p in out.iterdir() if p.name not in (".sweep.lock", ".claims")}
        filler = fill(disk)
        assert main(sweep_cli(runs, out, "0,1")) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"no space left on the device (or quota exceeded) while writing output '{out}'" in line
        assert {
            p.name: p.read_bytes() for p in out.iterdir() if p.name not in (".sweep.lock", ".claims")
        } == before  # no temporaries
        filler.unlink()
        assert main(sweep_cli(runs, out, "0,1")) == 0
        assert [(c["checkpoint"], c["alpha"]) for c in read_cells(out)] == [("chck_1M", 0.0), ("chck_1M", 1.0)]


def test_a_cell_the_disk_has_no_room_for_is_taken_back(tmp_path):
    """A cell line longer than the space left: the part written is truncated away, not left cut off."""
    with tmpfs(tmp_path / "disk", "1m") as disk:
        cell = {"checkpoint": "chck_1M", "alpha": 0.0, "results": {"mini_pairs": {"note": "x" * 20_000}}}
        append_cell(disk, {**cell, "results": {}})
        before = (disk / CELLS).read_bytes()
        fill(disk, leave=8192)
        with pytest.raises(BabyMergeError, match=r"no space left on the device .* while writing output"):
            append_cell(disk, cell)
        assert (disk / CELLS).read_bytes() == before


def test_default_tasks_are_the_projects_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no lm_eval_tasks here: the default must not depend on the current directory
    assert default_include_path() == [str(REPO / "lm_eval_tasks")]


def test_tasks_that_would_come_from_lm_eval_or_the_hub_are_refused(tmp_path):
    tasks = write_tasks(tmp_path)
    (tasks / "hub_pairs.yaml").write_text("task: hub_pairs\ndataset_path: nyu-mll/blimp\ndataset_name: wh_island\n"
                                          "output_type: multiple_choice\ntest_split: train\n")  # fmt: skip
    (tasks / "mixed.yaml").write_text("group: mixed\ntask:\n  - mini_pairs\n  - blimp_wh_island\n")
    (tasks / "inline.yaml").write_text("group: inline\ntask:\n  - task: hellaswag\n    num_fewshot: 0\n")
    include = [str(tasks)]
    manager = TaskManager(include_path=include)
    check_tasks_are_local(manager, ["mini_pairs"], include)
    cases = [
        # our folder does not define blimp_wh_island: lm-eval's own (hub nyu-mll/blimp) would be used silently
        (["blimp_wh_island"], r"'blimp_wh_island' is defined by lm-eval itself .*--allow-hub-tasks"),
        (["mixed"], r"'blimp_wh_island' \(in mixed\) is defined by lm-eval itself"),
        (["inline"], r"'hellaswag' \(in inline\) reads dataset_path 'Rowan/hellaswag', not local files"),
        (["hub_pairs"], r"'hub_pairs' reads dataset_path 'nyu-mll/blimp', not local files"),
        (["mini_pair"], r"'mini_pair' is not a task, group or tag of"),
    ]
    for names, message in cases:
        with pytest.raises(BabyMergeError, match=message):
            check_tasks_are_local(manager, names, include)
    full = [str(REPO / "lm_eval_tasks")]  # the project's own blimp tasks replace lm-eval's
    check_tasks_are_local(TaskManager(include_path=full), ["blimp", "blimp_filtered", "winoground"], full)


def test_parse_alphas_dedupes():
    assert parse_alphas("0,0.5,0.5,1") == [0.0, 0.5, 1.0]
