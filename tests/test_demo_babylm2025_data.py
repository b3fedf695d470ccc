"""The 2025 parts the demo draws from its world (``demo.babylm2025_data``): read back by the readers that use them.

* GLUE: every task's files, read by the fine-tuner's own reader (``train.glue.read_examples``): the second
  text is one sentence of a world minimal pair, the label 1 exactly when it is the pair's grammatical one;
* ``winoground_filtered``: loaded by the lm-eval task's loader, each picture with its own caption first;
* DevBench: the manifests pass ``babymerge devbench``'s data check, with the shapes the submission is told;
* AoA: every context is the words before the target word in a sentence of the given text.
"""

import json

import pytest

from babymerge.babylm import devbench
from babymerge.babylm.tasks import GLUE_2025
from demo import grammar, world
from demo.babylm2025_data import write_cdi, write_devbench, write_glue, write_winoground_filtered
from train.glue import read_examples, task_file

from conftest import load_task_module


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    world.write_world(root, n_text=200, n_captions=20, n_pictures=10, n_pairs=10, n_winoground=9)
    return root


def test_glue_rows_are_world_pairs_labelled_by_which_sentence_is_grammatical(data):
    evaluation = data / "evaluation_data"
    rows = [json.loads(line) for f in (evaluation / world.GROUP).glob("*.jsonl") for line in f.read_text().splitlines()]
    pairs = [(r["sentence_good"], r["sentence_bad"]) for r in rows]
    grammatical = {good for good, _ in pairs}
    assert write_glue(evaluation, pairs, 12, 6) == {task: 6 for task in GLUE_2025}
    for task in GLUE_2025:
        for split, n in (("train", 12), ("valid", 6)):
            texts, labels = read_examples(task_file(evaluation, task, split), task)
            assert len(texts) == n and set(labels) <= {0, 1}
            for (first, second), label in zip(texts, labels):
                assert first != second and label == (second in grammatical)


def test_winoground_filtered_loads_each_picture_with_its_own_caption_first(data, monkeypatch):
    evaluation = data / "evaluation_data"
    assert write_winoground_filtered(evaluation) == 18
    monkeypatch.setenv("BABYMERGE_DATA", str(evaluation))
    utils = load_task_module("winoground")
    loaded = utils.load_winoground_filtered()["test"]
    items = [json.loads(line) for line in (evaluation / "winoground" / "winoground.jsonl").read_text().splitlines()]
    assert len(loaded) == 2 * len(items)
    for row in loaded:
        item = items[row["image_idx"]]
        own = "caption_0" if row["image_key"] == "image_0" else "caption_1"
        assert row["caption_0"] == item[own] and row["caption_1"] != item[own]
        assert row["caption_1"] in (item["caption_0"], item["caption_1"])


def test_devbench_manifests_pass_the_data_check_with_the_shapes_given(data):
    evaluation = data / "evaluation_data"
    shapes = write_devbench(evaluation, trials=4, things=5)
    trials = devbench.check_data(evaluation / "full_eval" / "devbench")
    assert [len(trials["lex-viz_vocab"]), 4, 1] == shapes["lex-viz_vocab"]
    assert [len(trials["gram-trog"]), 4, 1] == shapes["trog"] and [len(trials["sem-things"])] * 2 == shapes["things"]
    items = [json.loads(line) for line in (evaluation / "winoground" / "winoground.jsonl").read_text().splitlines()]
    assert [t.texts[0] for t in trials["gram-trog"]] == [it["caption_0"] for it in items[:4]]


def test_cdi_contexts_are_the_words_before_the_target_in_the_text(data):
    evaluation = data / "evaluation_data"
    sentences = (data / "corpora" / "text" / "corpus.train").read_text().splitlines()
    words = sorted(grammar.NOUNS)[:5]
    n = write_cdi(evaluation, sentences, words)
    cdi = json.loads((evaluation / "full_eval" / "aoa" / "cdi_childes.json").read_text())
    assert n == sum(len(c) for c in cdi.values()) > 0 and set(cdi) <= set(words)
    for word, contexts in cdi.items():
        for c in contexts:
            assert any(s.startswith(c["context"] + " " + word) for s in sentences)
