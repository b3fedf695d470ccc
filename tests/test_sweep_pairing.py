"""Sweep points (``babymerge.sweep.pairing``): alphas parsed from the command line, and the
checkpoints of two training runs paired by name and by words seen, in training order."""

import pytest

from babymerge import BabyMergeError
from babymerge.sweep import checkpoint_pairs, parse_alphas


def test_parse_alphas():
    assert parse_alphas("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_alphas("0,0.3,1") == [0.0, 0.3, 1.0]
    assert len(parse_alphas("0:1:0.1")) == 11
    with pytest.raises(BabyMergeError, match=r"in \[0, 1\]"):
        parse_alphas("0,1.5")


def test_parse_alphas_dedupes():
    assert parse_alphas("0,0.5,0.5,1") == [0.0, 0.5, 1.0]


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


def test_word_count_checkpoints_pair_by_words_seen_in_training_order(sweep_runs):
    mm, lang, _ = sweep_runs
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
