"""The BabyLM contract (``babymerge.babylm``): one tie rule and one set of metric names in every
choice task, checkpoint names read back exactly, one ``babymerge submit`` for both formats."""

import re
from pathlib import Path

import pytest
import yaml

from babymerge.babylm.checkpoints import FAST_REVISIONS, checkpoint_words, word_checkpoint_name
from babymerge.babylm.scoring import METRICS, choice_metrics, choose, is_right
from babymerge.cli import main as cli
from babymerge.sweep import words_seen

from conftest import REPO, load_task_module

TASKS = REPO / "lm_eval_tasks"
# (right, other, ...) summed log-probabilities -> (acc, acc_pipeline, ties)
CASES = [
    ([-3.0, -3.0], (0.0, 1.0, 1.0)),
    ([-2.0, -3.0], (1.0, 1.0, 0.0)),
    ([-4.0, -3.0], (0.0, 0.0, 0.0)),
    ([-3.0, -5.0, -3.0], (0.0, 1.0, 1.0)),
    ([-4.0, -3.0, -3.0], (0.0, 0.0, 0.0)),
]


def test_every_choice_task_counts_a_tie_the_same_way_under_the_same_names():
    blimp, babylm2025, vqa, winoground = (
        load_task_module(name) for name in ("blimp", "babylm2025", "babylm2025/vqa", "winoground")
    )
    for scores, expected in CASES:
        want = dict(zip(METRICS, expected))
        assert choice_metrics(scores) == want
        assert (float(is_right(scores)), float(choose(scores) == 0)) == expected[:2]
        results = [(s, False) for s in scores]
        for process in (babylm2025.process_results, vqa.process_results):
            assert process({}, results) == want
        if len(scores) == 2:
            assert blimp.process_results({}, results) == want
            assert winoground.filtered_results({}, results) == want
    # Winoground's text score: each image prefers its own caption strictly (a tie is wrong)
    tied = {(0, 0): -1.0, (1, 0): -1.0, (1, 1): -1.0, (0, 1): -2.0}
    assert winoground.scores(tied) == {"text_score": 0.0, "image_score": 0.0, "group_score": 0.0}
    # and every choice task's YAML declares exactly those metrics
    for path in (
        TASKS / "blimp" / "_template_yaml",
        TASKS / "babylm2025" / "_template_yaml",
        TASKS / "babylm2025" / "vqa" / "babylm2025_vqa_vqa.yaml",
        TASKS / "winoground" / "winoground_filtered.yaml",
    ):
        config = yaml.safe_load(path.read_text().replace("!function", ""))
        assert tuple(m["metric"] for m in config["metric_list"]) == METRICS, path
    for group in ("blimp", "blimp_filtered", "blimp_supplement", "blimp_macro"):
        config = yaml.safe_load((TASKS / "blimp" / f"{group}.yaml").read_text())
        assert tuple(m["metric"] for m in config["aggregate_metric_list"]) == METRICS, group


def test_checkpoint_names_are_read_back_exactly():
    for words in (1, 1_000, 12_500, 1_500_000, 10**6, 10**9, 12_345_678_901_234_567):
        assert checkpoint_words(word_checkpoint_name(words)) == words
    assert word_checkpoint_name(12_345_678_901_234_567) == "chck_12345678901.234567M"  # beyond float precision
    assert checkpoint_words("chck_10.0M") == checkpoint_words("chck_10M") == 10_000_000
    assert checkpoint_words("chck_0.0010000M") == 1_000
    for other in ("chck_0.0000001M", "chck_M", "chck_1.M", "chck_.5M", "chck_1e6M", "chck_-1M", "ckpt-ep1", "chck_1"):
        assert checkpoint_words(other) is None, other
    assert [checkpoint_words(n) for n in FAST_REVISIONS[:3]] == [1_000_000, 2_000_000, 3_000_000]
    assert words_seen(Path("runs/mm/chck_0.0125M")) == 12_500 and words_seen(Path("runs/mm/chck_0.0000001M")) is None


def test_submit_refuses_an_option_of_the_other_format(tmp_path, capsys):
    base = ["submit", "--results", str(tmp_path), "--model", "m", "--out", str(tmp_path / "out")]
    for args, message in (
        (["--fast-results", "x"], "--fast-results is an option of --format 2025, not of --format 2024"),
        (["--format", "2024", "--track", "strict"], "--track is an option of --format 2025"),
        (["--format", "2025", "--vision"], "--vision is an option of --format 2024, not of --format 2025"),
        (["--format", "2025", "--data", "d"], "--data is an option of --format 2024"),
        (["--format", "2025", "--sizes", str(tmp_path / "none.json")], "--sizes .*none.json: not a readable JSON file"),
    ):
        assert cli(base + args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("babymerge: error: ")
        assert re.search(message, err), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("form", [[], ["--format", "2024"], ["--format", "2025"]])
def test_submit_forms_reach_their_writer(tmp_path, capsys, form):
    """Each accepted form gets to its writer, which reports the empty results folder in one line."""
    assert cli(["submit", *form, "--results", str(tmp_path), "--model", "m", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("no lm-eval samples" in err or "not found" in err), err


def test_the_2025_size_tables_name_the_contracts_subtasks():
    """``sizes.FULL_SIZES`` copies collate_preds' counts; its subtask names are the lists'."""
    from babymerge.babylm.sizes import FULL_SIZES
    from babymerge.babylm.tasks import BLIMP_UIDS, COMPS_FILES, EWOK_DOMAINS, GLUE_2025, SUPPLEMENT

    for task, names in (
        ("blimp", BLIMP_UIDS),
        ("blimp_supplement", SUPPLEMENT),
        ("ewok", EWOK_DOMAINS),
        ("comps", COMPS_FILES),
    ):
        assert sorted(FULL_SIZES[task]) == sorted(n.lower() for n in names), task
    assert set(GLUE_2025) <= set(FULL_SIZES)
