"""Alpha sweeps: one load per checkpoint pair, results equal separate runs, resumable, plots."""

import csv

import lm_eval
import pytest
from lm_eval.tasks import TaskManager

from babymerge import BabyMergeError
from babymerge.checkpoint import Checkpoint
from babymerge.data.synthetic_winoground import write_dataset
from babymerge.lm_eval_model import BabyMergeLM
from babymerge.sweep import checkpoint_pairs, parse_alphas, plotted_tasks, sweep

from conftest import REPO, write_pairs_task

PAIRS = [("The dog sees the cat.", "The dog see the cat."), ("A girl likes the ball.", "A girl like the ball."),
         ("Some boys help the teacher.", "Some boys helps the teacher."), ("This bird finds a tree.", "This bird find a tree.")]  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny text task (minimal pairs as a local JSON file) plus the synthetic Winoground."""
    root = tmp_path_factory.mktemp("sweep")
    data = root / "data"
    write_dataset(data / "winoground", n=4, seed=2)
    write_pairs_task(root, PAIRS)
    include = [str(REPO / "lm_eval_tasks"), str(root / "tasks")]
    with pytest.MonkeyPatch.context() as mp:  # a module fixture: monkeypatch itself is per test
        mp.setenv("BABYMERGE_DATA", str(data))
        yield include


def test_parse_alphas():
    assert parse_alphas("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_alphas("0,0.3,1") == [0.0, 0.3, 1.0]
    assert len(parse_alphas("0:1:0.1")) == 11
    with pytest.raises(BabyMergeError, match=r"in \[0, 1\]"):
        parse_alphas("0,1.5")


def test_checkpoint_pairs_match_by_name(tmp_path, toy):
    for run in ("mm", "lang"):
        for name in ("ckpt-ep2", "ckpt-ep10", "ckpt-ep1"):
            (tmp_path / run / name).mkdir(parents=True)
            (tmp_path / run / name / "config.json").write_text("{}")
    pairs = checkpoint_pairs(tmp_path / "mm", tmp_path / "lang")
    assert [p[0] for p in pairs] == ["ckpt-ep1", "ckpt-ep2", "ckpt-ep10"]
    assert [p[0] for p in checkpoint_pairs(tmp_path / "mm", tmp_path / "lang", "latest")] == ["ckpt-ep10"]
    with pytest.raises(BabyMergeError, match=r"\['ckpt-ep3'\] not found in both runs"):
        checkpoint_pairs(tmp_path / "mm", tmp_path / "lang", "ckpt-ep3")
    assert checkpoint_pairs(toy.mm, toy.lang) == [("mm", toy.mm, toy.lang)]


@pytest.mark.slow
def test_sweep_loads_once_equals_separate_runs_and_resumes(toy, setup, tmp_path, monkeypatch):
    opened = []
    original = Checkpoint.__init__

    def counting_init(self, path, role="checkpoint"):
        opened.append(role)
        original(self, path, role)

    monkeypatch.setattr(Checkpoint, "__init__", counting_init)
    tasks = ["mini_pairs", "winoground"]
    cells = sweep(toy.mm, toy.lang, [0.0, 1.0], tasks, tmp_path / "sweep", include_path=setup, progress=False)
    assert len(cells) == 2 and sorted(opened) == ["language-only", "multimodal"]  # each checkpoint read once

    rows = list(csv.DictReader((tmp_path / "sweep" / "results.csv").open()))
    assert {r["task"] for r in rows} == {"mini_pairs", "winoground"}
    assert all(r["stderr"] != "" for r in rows if r["metric"] in ("acc", "group_score"))
    for alpha in (0.0, 1.0):  # the same cell evaluated from a fresh merge, as a separate lm_eval run would
        fresh = BabyMergeLM(pretrained=str(toy.mm), lang_ckpt=str(toy.lang), alpha=alpha)
        ref = lm_eval.simple_evaluate(model=fresh, tasks=tasks, task_manager=TaskManager(include_path=setup))["results"]
        got = {(r["task"], r["metric"]): float(r["value"]) for r in rows if float(r["alpha"]) == alpha}
        assert got[("mini_pairs", "acc")] == ref["mini_pairs"]["acc,none"]
        for metric in ("text_score", "image_score", "group_score"):
            assert got[("winoground", metric)] == ref["winoground"][f"{metric},none"]

    opened.clear()
    cells = sweep(toy.mm, toy.lang, [0.0, 0.5, 1.0], tasks, tmp_path / "sweep", include_path=setup, progress=False)
    assert len(cells) == 3 and [c["alpha"] for c in cells][-1] == 0.5  # only the new cell ran
    assert sorted(opened) == ["language-only", "multimodal"]
    for png in ("score_vs_alpha.png", "tradeoff.png"):
        assert (tmp_path / "sweep" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_groups_without_a_score_of_their_own_are_plotted_through_their_members(setup):
    """The 2025 suites average nothing (their tasks' metrics differ), so the plots show their
    members, read here from the group files themselves; groups with a score stay as they are."""
    import yaml

    suite = REPO / "lm_eval_tasks" / "babylm2025" / "babylm2025_fast.yaml"
    members = yaml.safe_load(suite.read_text())["task"]
    assert "aggregate_metric_list" not in yaml.safe_load(suite.read_text())
    task_manager = TaskManager(include_path=setup)
    assert plotted_tasks(task_manager, ["babylm2025_fast"]) == members
    assert "babylm2025_fast_blimp" in members and "babylm2025_fast_reading_reading" in members
    assert plotted_tasks(task_manager, ["blimp", "mini_pairs", "babylm2025_fast_blimp"]) == [
        "blimp",
        "mini_pairs",
        "babylm2025_fast_blimp",
    ]
