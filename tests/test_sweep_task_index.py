"""Which tasks a sweep evaluates (``babymerge.sweep.task_index``): by default the project's, from
any directory; a task that lm-eval itself or the hub would supply is refused, naming it; a group
without a score of its own is plotted through its members."""

import pytest
from lm_eval.tasks import TaskManager

from babymerge import BabyMergeError
from babymerge.sweep import check_tasks_are_local, default_include_path, plotted_tasks

from conftest import REPO
from helpers.sweep import write_tasks


def test_default_tasks_are_the_projects_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no lm_eval_tasks here: the default must not depend on the current directory
    assert default_include_path() == [str(REPO / "lm_eval_tasks")]


@pytest.mark.slow  # indexes lm-eval's own tasks twice
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


def test_groups_without_a_score_of_their_own_are_plotted_through_their_members(sweep_include):
    """The 2025 suites average nothing (their tasks' metrics differ), so the plots show their
    members, read here from the group files themselves; groups with a score stay as they are."""
    import yaml

    suite = REPO / "lm_eval_tasks" / "babylm2025" / "babylm2025_fast.yaml"
    members = yaml.safe_load(suite.read_text())["task"]
    assert "aggregate_metric_list" not in yaml.safe_load(suite.read_text())
    task_manager = TaskManager(include_path=sweep_include)
    assert plotted_tasks(task_manager, ["babylm2025_fast"]) == members
    assert "babylm2025_fast_blimp" in members and "babylm2025_fast_reading_reading" in members
    assert plotted_tasks(task_manager, ["blimp", "mini_pairs", "babylm2025_fast_blimp"]) == [
        "blimp",
        "mini_pairs",
        "babylm2025_fast_blimp",
    ]
