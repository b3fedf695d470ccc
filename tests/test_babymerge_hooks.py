"""The start-up hook (``_babymerge_hooks``) keeps lm-eval quiet by default: our tasks replacing
lm-eval's own of the same names are DEBUG records, any other override stays a warning, so a normal
``lm_eval --model babymerge`` run prints progress and results, not notices the user can do nothing
about; lm-eval's DEBUG level brings ours back."""

import json
import logging
import os
import subprocess
from pathlib import Path

import lm_eval.tasks
import pytest
from lm_eval.tasks._index import TaskIndex

from babymerge import tasks_path

from helpers.commands import lm_eval_command

OVERRIDES = "overrides existing task"
TORCHVISION = "requires torchvision"
PARADIGM = "anaphor_number_agreement"


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def build_index(paths, level):
    """lm-eval's task index over ``paths`` with its index logger at ``level``; the records."""
    log = logging.getLogger("lm_eval.tasks._index")
    handler, before = Records(), log.level
    log.addHandler(handler)
    log.setLevel(level)
    try:
        TaskIndex.build([Path(p) for p in paths])
    finally:
        log.removeHandler(handler)
        log.setLevel(before)
    return [r for r in handler.records if OVERRIDES in r.getMessage()]


def test_our_tasks_over_lm_evals_own_are_debug_records():
    theirs = Path(lm_eval.tasks.__file__).parent / "blimp"
    assert not build_index([theirs, tasks_path()], logging.INFO)
    shown = build_index([theirs, tasks_path()], logging.DEBUG)
    assert len(shown) >= 67 and {r.levelname for r in shown} == {"DEBUG"}
    assert f"blimp_{PARADIGM}" in {r.args[0] for r in shown}


def test_a_users_own_override_stays_a_warning(tmp_path):
    for folder in ("first", "second"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "t.yaml").write_text(f"task: my_task\ndataset_path: json\n# {folder}\n")
    shown = build_index([tmp_path / "first", tmp_path / "second"], logging.INFO)
    assert [r.levelname for r in shown] == ["WARNING"]
    # a user's task over one of ours is theirs to know about too
    ours = Path(tasks_path()) / "blimp"
    (tmp_path / "third").mkdir()
    (tmp_path / "third" / "t.yaml").write_text(f"task: blimp_{PARADIGM}\ndataset_path: json\n")
    assert [r.levelname for r in build_index([ours, tmp_path / "third"], logging.INFO)] == ["WARNING"]


def lm_eval_output(toy, tmp_path, name, *extra, env=()):
    data = tmp_path / "data"
    (data / "blimp").mkdir(parents=True, exist_ok=True)
    pairs = [("The girls saw themselves.", "The girls saw herself."), ("The boy helps himself.", "The boy helps them.")]
    lines = [json.dumps({"sentence_good": g, "sentence_bad": b, "UID": PARADIGM, "pairID": str(i)}) for i, (g, b) in enumerate(pairs)]  # fmt: skip
    (data / "blimp" / f"{PARADIGM}.jsonl").write_text("\n".join(lines) + "\n")
    cmd = lm_eval_command(f"pretrained={toy.mm}", f"blimp_{PARADIGM}", include=tasks_path(), out=tmp_path / name,
                          limit=2, batch_size=1, log_samples=False) + list(extra)  # fmt: skip
    run_env = {**os.environ, "BABYMERGE_DATA": str(data), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    run_env.pop("LMEVAL_LOG_LEVEL", None)  # lm-eval's default level unless the test sets one
    result = subprocess.run(cmd, capture_output=True, text=True, env={**run_env, **dict(env)})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.mark.slow
def test_lm_eval_run_is_quiet_and_debug_brings_the_overrides_back(toy, tmp_path):
    quiet = lm_eval_output(toy, tmp_path, "quiet")
    assert f"blimp_{PARADIGM}" in quiet and "acc" in quiet  # the results table
    assert OVERRIDES not in quiet and TORCHVISION not in quiet
    loud = lm_eval_output(toy, tmp_path, "debug", env={"LMEVAL_LOG_LEVEL": "DEBUG"})
    assert loud.count(OVERRIDES) >= 67
