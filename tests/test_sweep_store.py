"""What a sweep records (``babymerge.sweep.store``): one finished cell per line of
``cells.jsonl``, ``results.csv`` with words seen and one row per cell, the settings a resumed
sweep must match (it says what differs); damaged or cut-off lines are skipped with a warning and
recomputed; a cell the disk has no room for is taken back."""

import csv
import json
from pathlib import Path

import pytest

from babymerge import BabyMergeError
from babymerge.sweep import CELLS, append_cell, sweep

from conftest import tmpfs
from helpers.files import fill
from helpers.sweep import fake_run


@pytest.mark.slow
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


@pytest.mark.slow
def test_resume_with_other_settings_is_refused_saying_what_differs(swept, sweep_runs, toy, tmp_path):
    out, _ = swept
    mm, lang, include = sweep_runs
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


@pytest.mark.slow
def test_damaged_cells_are_skipped_with_a_warning_and_recomputed(sweep_runs, tmp_path):
    mm, lang, include = sweep_runs
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
