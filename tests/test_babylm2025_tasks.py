"""BabyLM 2025 text zero-shot tasks against the official 2025 pipeline, run unmodified on the same items.

Small fixtures in the exact field layout of the pipeline's data files (every BLiMP paradigm,
EWoK domain, entity-tracking subset and COMPS file, a few items each), a tiny random
``LlamaForCausalLM`` with a tokenizer that loads without custom code (once with a BOS token
added by the tokenizer, once without, as our own tokenizers). The pipeline runs once per
(task, data folder) inside one subprocess (``pipeline2025_driver.py``, which also records the
per-item log-probability sums it computes); ``lm_eval --model babymerge`` runs once per model on
all our tasks. Per item: summed log-probabilities within 1e-4 and the same prediction; per
subtask and group: the pipeline's accuracy (ties right) is our ``acc_pipeline``, and ``acc`` is
it minus ``ties``; fast scores equal what ``collate_preds`` computes for the submission file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from lm_eval.api.instance import Instance

from babymerge import BabyMergeError
from babymerge.babylm.checkpoints import FAST_REVISIONS, STRICT_SMALL_FAST_REVISIONS
from babymerge.babylm.scoring import SCORING_KEY, choose, first_probability, pipeline_prediction, pipeline_tokens
from babymerge.babylm.tasks import ENTITY_TRACKING_SPLITS, FOLDERS, TASKS, task_name
from babymerge.tokenization import train_bpe_tokenizer
from demo.babylm2025_data import write_evaluation_data, write_jsonl
from demo.toy import synthetic_sentences

from conftest import PIPELINE, REPO, load_task_module, needs_pipeline, run_lm_eval
from helpers.data import BLIMP_UIDS, build_data
from helpers.models import build_model

TASK_DIR = REPO / "lm_eval_tasks" / "babylm2025"
pytestmark = pytest.mark.slow  # the official pipeline and lm_eval run as subprocesses on every task
utils = load_task_module("babylm2025")

OURS = [e for e in TASKS.values() if e.reader]  # the text tasks (VQA and reading live elsewhere)
# BLiMP: a few paradigms (the pipeline reads whichever files the folder has), scored one by one; the
# other tasks whole, through their groups (the BLiMP groups average the same way as the supplement's).
BLIMP = BLIMP_UIDS
GROUPS = [
    "babylm2025_blimp_supplement",
    "babylm2025_ewok",
    "babylm2025_entity_tracking",
    "babylm2025_comps",
    "babylm2025_fast_blimp_supplement",
    "babylm2025_fast_ewok",
    "babylm2025_fast_entity_tracking",
]
SINGLE = [
    "babylm2025_wug_adj_wug_adj",
    "babylm2025_wug_past_wug_past",
    "babylm2025_fast_wug_adj_wug_adj",
    "babylm2025_fast_wug_past_wug_past",
] + [task_name("blimp", uid, kind) for kind in BLIMP for uid in BLIMP[kind]]
# The pipeline's runs: (task, kind) -> its --task; the data folder is FOLDERS[task, kind].
RUNS = {(e.task, e.kind): e.reader for e in OURS}
COLLATE = {
    "blimp": ["target", "blimp"],
    "blimp_supplement": ["target", "blimp_supplement"],
    "ewok": ["target", "ewok"],
    "entity_tracking": ["target_et"],
    "wug_adj": ["wugs", "wug_adj_nominalization"],
    "wug_past": ["wugs", "wug_past_tense"],
}


# -- fixtures: data in the pipeline's layout (helpers.data), two tiny models (helpers.models) --------
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("babylm2025")
    data = build_data(root / "evaluation_data")
    models = {
        "bos": build_model(
            root / "bos_model", train_bpe_tokenizer(synthetic_sentences(1000), vocab_size=300), bos=True
        ),
        "plain": build_model(
            root / "plain_model", train_bpe_tokenizer(synthetic_sentences(1000), vocab_size=300), bos=False
        ),
    }
    return root, data, models


PLAIN_TASKS = [
    "babylm2025_blimp_supplement",
    "babylm2025_ewok",
    "babylm2025_fast_entity_tracking",
    "babylm2025_comps",
    "babylm2025_wug_past_wug_past",
]


@pytest.fixture(scope="module")
def pipeline(setup):
    """The official pipeline on every (task, folder) for the BOS model, on some for the plain one. Batch size 1:
    in a padded batch its two candidates of an exact tie (our fixtures have two) can differ by float noise."""
    root, data, models = setup
    plain_runs = {
        ("blimp_supplement", "full"),
        ("ewok", "full"),
        ("entity_tracking", "fast"),
        ("comps", "full"),
        ("wug_past", "full"),
    }
    runs = []
    for (task, kind), reader in RUNS.items():
        for name, model in models.items():
            if name == "plain" and (task, kind) not in plain_runs:
                continue
            folder = data / FOLDERS[task, kind]
            argv = ["--task", reader, "--data_path", str(folder), "--model_path_or_name", str(model)]
            argv += ["--backend", "causal", "--output_dir", str(root / "pipeline_results"), "--batch_size", "1"]
            argv += ["--save_predictions"]  # last: the driver reads the options before it as pairs
            collate = COLLATE.get(task) if kind == "fast" else None
            runs.append({"key": f"{name}/{task}/{kind}", "argv": argv, "collate": collate and [*collate, str(folder)]})
    (root / "runs.json").write_text(json.dumps(runs))
    env = {**os.environ, "PYTHONPATH": str(PIPELINE), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).parent / "pipeline2025_driver.py"),
            str(root / "runs.json"),
            str(root / "pipeline.json"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((root / "pipeline.json").read_text())


@pytest.fixture(scope="module")
def ours(setup):
    """Our tasks: the `lm_eval --model babymerge` command on every text task (BOS model); lm-eval's
    Python API, without its own task index to save time, on a few groups (plain model)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from babymerge.lm_eval_model import BabyMergeLM

    root, data, models = setup
    run_lm_eval(f"pretrained={models['bos']}", GROUPS + SINGLE, root / "lm_eval", data)
    (results,) = (root / "lm_eval").rglob("results_*.json")
    samples = {}
    for path in (root / "lm_eval").rglob("samples_*.jsonl"):
        samples[path.name.split("samples_")[1].rsplit("_", 1)[0]] = [
            json.loads(line) for line in path.read_text().splitlines()
        ]
    out = {"bos": (json.loads(results.read_text())["results"], samples)}
    with pytest.MonkeyPatch.context() as mp:  # a module fixture: monkeypatch itself is per test
        mp.setenv("BABYMERGE_DATA", str(data))
        manager = TaskManager(include_path=str(REPO / "lm_eval_tasks"), include_defaults=False)
        plain = lm_eval.simple_evaluate(
            model=BabyMergeLM(pretrained=str(models["plain"]), device="cpu"),
            tasks=PLAIN_TASKS,
            task_manager=manager,
            log_samples=True,
        )
    out["plain"] = plain["results"], plain["samples"]
    return {
        name: (results, {task: sorted(rows, key=lambda r: r["doc_id"]) for task, rows in samples.items()})
        for name, (results, samples) in out.items()
    }


# -- agreement with the pipeline ------------------------------------------------------------------
@needs_pipeline
def test_every_item_scores_and_predicts_as_the_pipeline(pipeline, ours):
    checked = {"bos": 0, "plain": 0}
    for model, (_, samples) in ours.items():
        for name, rows in samples.items():
            entry = TASKS[name]
            run = pipeline[f"{model}/{entry.task}/{entry.kind}"]
            theirs = [lls for uid, lls in run["items"] if uid == entry.subtask]
            predictions = run["predictions"][entry.subtask]["predictions"]
            assert len(rows) == len(theirs) == len(predictions) > 0, name
            for n, (row, lls, prediction) in enumerate(zip(rows, theirs, predictions)):
                mine = [float(resp[0]) for resp in row["filtered_resps"]]  # the CLI writes them as strings
                assert mine == pytest.approx(lls, abs=1e-4), (name, n)
                assert prediction["id"] == f"{entry.subtask}_{row['doc_id']}"
                expected = pipeline_prediction(row["doc"], mine)
                assert prediction["pred"] == expected["pred"], (name, n)
                if "prob" in prediction:
                    assert prediction["prob"] == pytest.approx(expected["prob"], abs=1e-5)
                checked[model] += 1
    assert checked["bos"] > 150 and checked["plain"] > 50


@needs_pipeline
def test_subtask_and_group_scores_equal_the_pipeline(pipeline, ours):
    checked = set()
    for model, (results, _) in ours.items():
        for entry in OURS:
            if entry.name not in results:
                continue
            run, mine = pipeline[f"{model}/{entry.task}/{entry.kind}"], results[entry.name]
            if entry.reader.startswith("wug"):  # Spearman over the task's items
                assert mine["spearman,none"] == pytest.approx(run["average"], abs=1e-6)
                continue
            assert mine["acc_pipeline,none"] * 100 == pytest.approx(run["accuracies"]["UID"][entry.subtask], abs=1e-9)
            assert mine["acc,none"] == pytest.approx(mine["acc_pipeline,none"] - mine["ties,none"], abs=1e-12)
        # group means are the pipeline's averages (ET: per split, then over them)
        for task, kind in RUNS:
            group = f"babylm2025_{'fast_' if kind == 'fast' else ''}{task}"
            if group in results and group in GROUPS:
                assert results[group]["acc_pipeline,none"] * 100 == pytest.approx(
                    pipeline[f"{model}/{task}/{kind}"]["average"]
                )
                checked.add(group)
    assert checked == set(GROUPS)
    bos = ours["bos"][0]
    tie = bos["babylm2025_blimp_adjunct_island"]  # the tie: right there, wrong here
    assert tie["ties,none"] == pytest.approx(1 / 3) and tie["acc_pipeline,none"] - tie["acc,none"] == pytest.approx(
        1 / 3
    )
    assert bos["babylm2025_fast_ewok_agent-properties"]["ties,none"] == pytest.approx(1 / 3)


@needs_pipeline
def test_fast_scores_equal_collate_preds(pipeline, ours):
    """The per-subtask fast scores the submission file carries (collate_preds on the pipeline's predictions)."""
    results = ours["bos"][0]
    for entry in OURS:
        if entry.kind != "fast" or entry.name not in results:
            continue
        collated = pipeline[f"bos/{entry.task}/fast"]["collate"][entry.subtask]
        metric = "spearman,none" if entry.reader.startswith("wug") else "acc_pipeline,none"
        assert results[entry.name][metric] == pytest.approx(collated, abs=1e-6), entry.name


@needs_pipeline
def test_table_uses_the_pipelines_names_and_checkpoint_order(pipeline):
    constants = pipeline["constants"]
    assert FAST_REVISIONS == constants["FAST_REVISIONS"]
    assert STRICT_SMALL_FAST_REVISIONS == constants["STRICT_SMALL_FAST_REVISIONS"]
    for task, subtasks in constants["FULL_SIZES"].items():  # collate_preds checks lower-cased subtask names
        ours_full = sorted(e.subtask.lower() for e in TASKS.values() if e.task == task and e.kind == "full")
        assert ours_full == sorted(subtasks), task
    assert (
        sorted(e.subtask for e in OURS if e.task == "entity_tracking" and e.kind == "fast")
        == constants["FAST_ENTITY_TRACKING"]
    )


# -- the tasks themselves -------------------------------------------------------------------------
def test_yamls_match_the_table():
    for entry in OURS:
        config = yaml.safe_load((TASK_DIR / entry.task / f"{entry.name}.yaml").read_text())
        assert config["task"] == entry.name
        assert config["dataset_kwargs"] == {
            "folder": entry.folder,
            "file": entry.file,
            "subtask": entry.subtask,
            "reader": entry.reader,
        }
    groups = {
        p.stem: yaml.safe_load(p.read_text())["task"]
        for p in TASK_DIR.glob("*/babylm2025*.yaml")
        if "group:" in p.read_text()
    }
    assert len(groups["babylm2025_blimp"]) == len(groups["babylm2025_fast_blimp"]) == 67
    assert groups["babylm2025_entity_tracking"] == [f"babylm2025_entity_tracking_{s}" for s in ENTITY_TRACKING_SPLITS]
    assert len(groups["babylm2025_fast_entity_tracking"]) == 6 and len(groups["babylm2025_comps"]) == 4
    fast = yaml.safe_load((TASK_DIR / "babylm2025_fast.yaml").read_text())["task"]
    full = yaml.safe_load((TASK_DIR / "babylm2025_full_zero_shot.yaml").read_text())["task"]
    from lm_eval.tasks import TaskManager

    known = set(TaskManager(include_path=str(REPO / "lm_eval_tasks"), include_defaults=False).all_tasks)
    assert {e.name for e in OURS} | set(groups) | {"babylm2025_fast", "babylm2025_full_zero_shot"} <= known
    assert set(fast) | set(full) <= known  # the top groups name only tasks that exist (H6's included)
    covered = lambda members: {t for m in members for t in groups.get(m, [m]) for t in groups.get(t, [t])}  # noqa: E731
    assert {e.name for e in OURS if e.kind == "fast"} <= covered(fast)
    assert {e.name for e in OURS if e.kind == "full"} <= covered(full)


def test_demo_evaluation_data_feeds_every_task(tmp_path, monkeypatch):
    """``demo.babylm2025_data.write_evaluation_data`` (what the demo and bench/fast_suite.py read): every
    text task of the table finds its subtask's items, with the item counts documented there; reading
    and VQA load too."""
    data = write_evaluation_data(tmp_path / "evaluation_data", n=3)
    monkeypatch.setenv("BABYMERGE_DATA", str(data))
    expected = {"blimp": 3, "blimp_supplement": 3, "ewok": 3, "entity_tracking": 3, "wug_adj": 12, "wug_past": 9}
    expected["comps"] = 4
    for entry in OURS:
        docs = utils.load(entry.folder, entry.file, entry.subtask, entry.reader)["test"]
        ties = entry.subtask in ("adjunct_island", "agent-properties")
        assert len(docs) == expected[entry.task] + (entry.kind == "fast" and entry.task == "blimp") + ties, entry.name
    reading = load_task_module("babylm2025/reading")
    for kind in ("full_eval", "fast_eval"):
        assert len(reading.load_reading(f"{kind}/reading")["test"]) == len(
            pd.read_csv(data / kind / "reading" / "reading_data.csv")
        )
    vqa = load_task_module("babylm2025/vqa")
    assert len(vqa.load_vqa()["test"]) == 4


def test_pipeline_tokens_follow_character_offsets(setup):
    from transformers import AutoTokenizer

    _, _, models = setup
    bos, plain = (AutoTokenizer.from_pretrained(models[name]) for name in ("bos", "plain"))
    text = bos("The dog sees a cat.")["input_ids"]
    assert pipeline_tokens(bos, "", "The dog sees a cat.") == (text, len(text) - 1)  # every word after BOS
    text = plain("The dog sees a cat.")["input_ids"]
    assert pipeline_tokens(plain, "", "The dog sees a cat.") == (text, len(text) - 1)  # the first token never
    context = "The dog sees"
    tokens, n = pipeline_tokens(bos, context, " a cat.")
    encoding = bos(context + " a cat.", return_offsets_mapping=True)
    assert tokens == encoding["input_ids"] and n == sum(end > len(context) for _, end in encoding["offset_mapping"])
    assert n == len(bos(" a cat.", add_special_tokens=False)["input_ids"])


def test_ties_and_spearman_are_counted_as_documented():
    assert utils.process_results({}, [(-3.0, False), (-3.0, False), (-5.0, False)]) == {
        "acc": 0.0,
        "acc_pipeline": 1.0,
        "ties": 1.0,
    }
    assert utils.process_results({}, [(-2.0, False), (-3.0, False)]) == {"acc": 1.0, "acc_pipeline": 1.0, "ties": 0.0}
    assert utils.process_results({}, [(-4.0, False), (-3.0, False), (-4.0, False)]) == {
        "acc": 0.0,
        "acc_pipeline": 0.0,
        "ties": 0.0,
    }
    assert choose([-3.0, -3.0]) == 0 and choose([-4.0, -3.0, -3.0]) == 1
    assert first_probability([0.0, 0.0]) == pytest.approx(0.5)
    assert first_probability([-1000.0, 0.0]) == pytest.approx(0.0)
    assert utils.spearman([(0.1, 1.0), (0.2, 3.0), (0.3, 2.0)]) == pytest.approx(0.5)


def test_missing_data_and_malformed_lines_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("BABYMERGE_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(BabyMergeError, match=r"nowhere/full_eval/ewok_filtered does not exist.*BABYMERGE_DATA"):
        utils.load("full_eval/ewok_filtered", "agent-properties", "agent-properties", "ewok")
    write_jsonl(tmp_path / "full_eval/ewok_filtered/agent-properties.jsonl", [{"Domain": "agent-properties"}])
    monkeypatch.setenv("BABYMERGE_DATA", str(tmp_path))
    with pytest.raises(BabyMergeError, match=r"agent-properties.jsonl, line 1: not a ewok line"):
        utils.load("full_eval/ewok_filtered", "agent-properties", "agent-properties", "ewok")


def test_pipeline_requests_mix_with_ordinary_ones(setup):
    """One loglikelihood call with both kinds (as lm-eval sends every task's requests at once)."""
    from babymerge.lm_eval_model import BabyMergeLM

    _, _, models = setup
    lm = BabyMergeLM(pretrained=str(models["bos"]), device="cpu")
    marked = {SCORING_KEY: "causal"}
    ordinary = [Instance("loglikelihood", {}, ("The dog", " sees a cat."), 0)]
    exact = [Instance("loglikelihood", {}, ("The dog", " sees a cat.", marked), 0)]
    mixed = lm.loglikelihood([ordinary[0], exact[0], ordinary[0]])
    assert mixed == [lm.loglikelihood(ordinary)[0], lm.loglikelihood(exact)[0], lm.loglikelihood(ordinary)[0]]
    model, tokenizer = lm.model, lm.tokenizer  # the marked one by hand: full text, scored tokens after the first
    encoding = tokenizer("The dog sees a cat.", return_offsets_mapping=True)
    ids, scored = encoding["input_ids"], torch.tensor([end > len("The dog") for _, end in encoding["offset_mapping"]])
    with torch.no_grad():
        logp = (
            model(torch.tensor([ids])).logits[0, :-1].log_softmax(-1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
        )
    assert mixed[1][0] == pytest.approx(float(logp[scored[1:]].sum()), abs=1e-4)


def test_babyllava_is_scored_as_its_processor_encodes_the_text(toy):
    """Our multimodal checkpoint: no black image of the adapter's own in front; whatever the checkpoint's
    processor (what the pipeline loads with ``AutoProcessor``) makes of the sentence, ``"<image> " + text``
    with the ``<image>`` token filled by the black image, is what the model reads, as when the pipeline calls
    ``model(input_ids=...)``. Checked against that forward."""
    from babymerge.lm_eval_model import BabyMergeLM
    from babymerge.processing import BabyLlavaProcessor

    lm = BabyMergeLM(pretrained=str(toy.mm), device="cpu")
    marked = {SCORING_KEY: "causal"}
    texts = [("", "The dog sees a cat."), ("The dog sees", " a big cat."), ("<image> The dog", " sees a cat.")]
    processor = BabyLlavaProcessor.from_pretrained(toy.mm)
    got = lm.loglikelihood([Instance("loglikelihood", {}, (c, x, marked), i) for i, (c, x) in enumerate(texts)])
    for (context, continuation), (score, _) in zip(texts, got):
        encoding = processor(text=context + continuation, return_offsets_mapping=True)
        ids = encoding["input_ids"]
        scored = torch.tensor([end > len(context) for _, end in encoding["offset_mapping"]])[1:]
        with torch.no_grad():
            logits = lm.model(input_ids=torch.tensor([ids])).logits[0, :-1]
        logp = logits.log_softmax(-1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
        assert score == pytest.approx(float(logp[scored].sum()), abs=1e-4)
