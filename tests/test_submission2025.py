"""`babymerge submit --format 2025` against the official pipeline's own collate_preds.

One tiny plain ``LlamaForCausalLM`` (the pipeline cannot load our BabyLLaVA checkpoints) and
small fixtures in the pipeline's data layout (a few BLiMP paradigms, every supplement file,
EWoK domain, entity-tracking subset, wug file and COMPS file, a few items each: the text
tasks' test builds them; plus a reading CSV) are evaluated twice:

* by the pipeline, unmodified, in one subprocess: ``sentence_zero_shot.run`` and
  ``reading.run`` for the full tasks (revision ``main``) and the fast tasks (revision
  ``chck_1M``); its ``collate_preds`` then writes the submission file (``--fast``);
* by ``lm_eval --model babymerge`` (full tasks once, fast tasks once), then
  ``babymerge submit --format 2025``.

The fast evaluation covers 28 checkpoints; both sides evaluate the same model once and copy
that checkpoint's results to the 27 other names (the pipeline's prediction folders, our
lm-eval output folders). GLUE fine-tuning and AoA are not zero-shot tasks of this project:
made-up prediction files in the pipeline's layout serve both sides (ours reads them with
``--pipeline-results``). The multimodal track's VQA, Winoground and DevBench need a model
the pipeline cannot load, so the comparison runs the text track (``--track strict``, same
checkpoints); VQA's prediction entries are checked in ``test_vqa_predictions_are_the_pipelines``.

collate_preds asserts the official sizes (59,875 BLiMP pairs, ...). It is run with its size
tables replaced by the fixture's counts (set in the subprocess before its ``main()``, code
untouched); ours gets the same counts through ``--sizes`` (per subtask where collate_preds has
one count for all: ours also learns from them which subtasks the fixture has). Compared: the whole JSON, key for
key: every task, subtask, prediction id and ``pred`` string exactly, numbers (wug ``prob``,
reading surprisals, fast scores) to float precision, NaN where the pipeline writes NaN.
"""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from babymerge import BabyMergeError
from babymerge.babylm.checkpoints import fast_revisions
from babymerge.babylm.submission2025 import build
from babymerge.babylm.tasks import TASKS, task_name
from babymerge.cli import main as cli
from babymerge.tokenization import train_bpe_tokenizer
from demo.babylm2025_data import write_reading_csv
from demo.toy import synthetic_sentences

from conftest import PIPELINE, needs_pipeline, run_lm_eval
from helpers.data import build_data, glue_rows
from helpers.models import build_model

pytestmark = pytest.mark.slow  # lm_eval and the official pipeline run as subprocesses
GLUE = ("boolq", "mnli", "mrpc", "multirc", "qqp", "rte", "wsc")
# (module, --task, full data folder, fast data folder) of the pipeline's runs (eval_zero_shot[_fast].sh)
PIPELINE_RUNS = [
    ("blimp", "blimp_filtered", "blimp_fast"),
    ("blimp", "supplement_filtered", "supplement_fast"),
    ("ewok", "ewok_filtered", "ewok_fast"),
    ("entity_tracking", "entity_tracking", "entity_tracking_fast"),
    ("wug_adj", "wug_adj_nominalization", "wug_adj_nominalization"),
    ("wug_past", "wug_past_tense", "wug_past_tense"),
    ("comps", "comps", None),
]
RUNNER = (
    "import json, runpy, sys\nfor argv in json.load(open(sys.argv[1])):\n"
    "    sys.argv = argv\n    runpy.run_module(argv[0], run_name='__main__')\n"
)
COLLATE = (
    "import json, sys\nimport evaluation_pipeline.collate_preds as c\nsizes = json.load(open(sys.argv[1]))\n"
    "c.FULL_SIZES.clear(); c.FULL_SIZES.update(sizes['full'])\n"
    "c.FAST_SIZES.clear(); c.FAST_SIZES.update(sizes['fast'])\n"
    "c.AOA_SIZE = sizes['aoa']\nsys.argv = ['collate_preds', *sys.argv[2:]]\nc.main()\n"
)


def python(args, cwd, **env):
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def lm_eval(pretrained, tasks, data, out):
    run_lm_eval(f"pretrained={pretrained}", tasks, out, data)


def lm_eval_tasks(data: Path, kind: str) -> list[str]:
    """Our text tasks whose data file the fixture has (it may leave out BLiMP paradigms), and reading."""
    have = [
        e.name
        for e in TASKS.values()
        if e.kind == kind and e.folder and (data / e.folder / f"{e.file}.jsonl").is_file()
    ]
    return have + [task_name("reading", "reading", kind)]


def first_lines(path: Path, n: int) -> None:
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:n]))


def count(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("submission2025")
    data = build_data(root / "evaluation_data")
    # collate_preds wants one count for every fast BLiMP paradigm / EWoK domain: drop the extra tie rows there
    for path in (data / "fast_eval" / "blimp_fast").glob("*.jsonl"):
        first_lines(path, 1)
    for path in (data / "fast_eval" / "ewok_fast").glob("*.jsonl"):
        first_lines(path, 2)
    reading_rows = len(write_reading_csv(data / "full_eval" / "reading" / "reading_data.csv", n_sentences=6))
    shutil.copytree(data / "full_eval" / "reading", data / "fast_eval" / "reading")
    model = build_model(root / "model", train_bpe_tokenizer(synthetic_sentences(1000), vocab_size=300), bos=False)

    # the pipeline: full tasks (main) and fast tasks (chck_1M), one subprocess
    theirs = root / "pipeline_results"
    jobs = []
    for task, full, fast in PIPELINE_RUNS:
        for folder, revision in ((f"full_eval/{full}", "main"), (fast and f"fast_eval/{fast}", "chck_1M")):
            if folder:
                jobs.append(
                    [
                        "evaluation_pipeline.sentence_zero_shot.run",
                        "--task",
                        task,
                        "--data_path",
                        str(data / folder),
                        "--model_path_or_name",
                        str(model),
                        "--backend",
                        "causal",
                        "--output_dir",
                        str(theirs),
                        "--save_predictions",
                        "--batch_size",
                        "4",
                        "--revision_name",
                        revision,
                    ]
                )
    for kind, revision in (("full_eval", "main"), ("fast_eval", "chck_1M")):
        jobs.append(
            [
                "evaluation_pipeline.reading.run",
                "--model_path_or_name",
                str(model),
                "--backend",
                "causal",
                "--data_path",
                str(data / kind / "reading" / "reading_data.csv"),
                "--output_dir",
                str(theirs),
                "--revision_name",
                revision,
            ]
        )
    (root / "jobs.json").write_text(json.dumps(jobs))
    python(
        ["-c", RUNNER, str(root / "jobs.json")],
        root,
        PYTHONPATH=str(PIPELINE),
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    for name in fast_revisions()[1:]:
        shutil.copytree(theirs / "model" / "chck_1M", theirs / "model" / name)
    # GLUE and AoA come from outside (fine-tuning, all checkpoints' surprisals): made-up files in the pipeline's layout
    main = theirs / "model" / "main"
    for i, task in enumerate(GLUE):
        preds = {task: {"predictions": [{"id": f"{task}_{n}", "pred": (n + i) % 2} for n in range(2 + i % 2)]}}
        (main / "finetune" / task).mkdir(parents=True)
        (main / "finetune" / task / "predictions.json").write_text(json.dumps(preds))
    aoa = {
        "results": [
            {"step": c, "target_word": w, "surprisal": 1.5 + k}
            for k, c in enumerate(fast_revisions())
            for w in ("dog", "cat")
        ]
    }
    (main / "zero_shot" / "causal" / "AoA_word").mkdir(parents=True)
    (main / "zero_shot" / "causal" / "AoA_word" / "surprisal.json").write_text(json.dumps(aoa))

    # the fixture's counts, in collate_preds' size tables' shape (subtasks in lower case, as it compares them)
    def per_subtask(task, folder):
        predictions = json.loads((main / "zero_shot" / "causal" / task / folder / "predictions.json").read_text())
        return {subtask.lower(): len(v["predictions"]) for subtask, v in predictions.items()}

    full = {
        "blimp": per_subtask("blimp", "blimp_filtered"),
        "blimp_supplement": per_subtask("blimp", "supplement_filtered"),
        "ewok": per_subtask("ewok", "ewok_filtered"),
        "entity_tracking": per_subtask("entity_tracking", "entity_tracking"),
        "comps": per_subtask("comps", "comps"),
        "reading": reading_rows,
        "wug_adj": count(data / "full_eval/wug_adj_nominalization/wug_adj_nominalization.jsonl"),
        "wug_past": count(data / "full_eval/wug_past_tense/wug_past_tense.jsonl"),
        **{task: 2 + i % 2 for i, task in enumerate(GLUE)},
        "winoground": 0,
        "vqa": 0,
    }
    fast_et = json.loads(
        (theirs / "model/chck_1M/zero_shot/causal/entity_tracking/entity_tracking_fast/predictions.json").read_text()
    )
    fast = {
        "blimp": 1,
        "blimp_supplement": count(data / "fast_eval/supplement_fast/hypernym.jsonl"),
        "ewok": 2,
        "entity_tracking": {k.lower(): len(v["predictions"]) for k, v in fast_et.items()},
        "reading": reading_rows,
        "wug_adj": count(data / "fast_eval/wug_adj_nominalization/wug_adj_nominalization.jsonl"),
        "wug_past": count(data / "fast_eval/wug_past_tense/wug_past_tense.jsonl"),
    }
    (root / "sizes.json").write_text(json.dumps({"full": full, "fast": fast, "aoa": 2}))
    python(
        [
            "-c",
            COLLATE,
            str(root / "sizes.json"),
            "--model_path_or_name",
            "model",
            "--backend",
            "causal",
            "--results_dir",
            str(theirs),
            "--fast",
            "--track",
            "strict",
            "--fast_eval_dir",
            str(data / "fast_eval"),
        ],
        root,
        PYTHONPATH=str(PIPELINE),
    )

    # ours: lm-eval on the full tasks (the model), on the fast tasks (a checkpoint named chck_1M) copied to the others
    lm_eval(model, lm_eval_tasks(data, "full"), data, root / "results" / "main")
    (root / "ckpts").mkdir()
    (root / "ckpts" / "chck_1M").symlink_to(model)
    lm_eval(root / "ckpts" / "chck_1M", lm_eval_tasks(data, "fast"), data, root / "results" / "fast" / "chck_1M")
    for name in fast_revisions()[1:]:
        copy = shutil.copytree(root / "results" / "fast" / "chck_1M", root / "results" / "fast" / name)
        for path in copy.rglob("results_*.json"):  # the copy stands for that checkpoint's own run
            path.write_text(path.read_text().replace("chck_1M", name))
    # ours takes per-subtask counts for fast BLiMP, supplement and EWoK too: they say which subtasks the fixture has
    for task, folder in (("blimp", "blimp_fast"), ("blimp_supplement", "supplement_fast"), ("ewok", "ewok_fast")):
        fast[task] = {path.stem.lower(): count(path) for path in (data / "fast_eval" / folder).glob("*.jsonl")}
    sizes = root / "ours_sizes.json"
    sizes.write_text(json.dumps({"full": full, "fast": fast, "aoa": 2}))
    return root, theirs / "model" / "all_full_preds_and_fast_scores_causal.json", sizes


def assert_same(ours, theirs, where="submission"):
    """Key for key; strings and ints exactly, floats to float precision, NaN equal to NaN."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and sorted(ours) == sorted(theirs), (
            f"{where}: keys {sorted(ours)} != {sorted(theirs)}"
        )
        for key in theirs:
            assert_same(ours[key], theirs[key], f"{where}/{key}")
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), (
            f"{where}: {len(ours)} entries, expected {len(theirs)}"
        )
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(theirs, float) and not isinstance(ours, str):
        assert (math.isnan(ours) and math.isnan(theirs)) or ours == pytest.approx(theirs, rel=1e-4, abs=1e-6), (
            f"{where}: {ours} != {theirs}"
        )
    else:
        assert ours == theirs and type(ours) is type(theirs), f"{where}: {ours!r} != {theirs!r}"


@needs_pipeline
def test_submission_equals_collate_preds(both, tmp_path):
    root, theirs_path, sizes = both
    code = cli(
        [
            "submit",
            "--format",
            "2025",
            "--results",
            str(root / "results" / "main"),
            "--model",
            "model",
            "--fast-results",
            str(root / "results" / "fast"),
            "--pipeline-results",
            str(root / "pipeline_results" / "model" / "main"),
            "--track",
            "strict",
            "--sizes",
            str(sizes),
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    ours = json.loads((tmp_path / "all_full_preds_and_fast_scores_causal.json").read_text())
    theirs = json.loads(theirs_path.read_text())
    assert set(theirs) == {
        "blimp",
        "blimp_supplement",
        "ewok",
        "entity_tracking",
        "wug_adj",
        "wug_past",
        "comps",
        "reading",
        "aoa",
        "glue",
        "fast_eval_results",
    }
    paradigms = len(list((root / "evaluation_data" / "full_eval" / "blimp_filtered").glob("*.jsonl")))
    assert len(theirs["fast_eval_results"]["blimp"]) == 28 and len(theirs["blimp"]) == paradigms
    assert_same(ours, theirs)


@needs_pipeline
def test_refuses_missing_and_wrong_counts_unless_partial(both, tmp_path, capsys):
    root, _, sizes = both
    args = [
        "submit",
        "--format",
        "2025",
        "--results",
        str(root / "results" / "main"),
        "--model",
        "model",
        "--track",
        "strict",
        "--out",
        str(tmp_path),
    ]
    # the official counts: 2 BLiMP pairs are not the pipeline's 928
    assert cli(args + ["--fast-results", str(root / "results" / "fast")]) == 2
    assert "blimp/adjunct_island has 3 predictions, the pipeline requires 928" in capsys.readouterr().err
    # no GLUE/AoA and no fast results: refused, then written with --allow-partial, which lists them
    assert cli(args + ["--sizes", str(sizes)]) == 2
    assert "lacks 3 parts" in capsys.readouterr().err and not list(tmp_path.iterdir())
    assert cli(args + ["--sizes", str(sizes), "--allow-partial"]) == 0
    assert "3 parts missing: glue, aoa, fast_eval_results" in capsys.readouterr().out
    written = json.loads((tmp_path / "all_full_preds_and_fast_scores_causal.json").read_text())
    assert "glue" not in written and "adjunct_island" in written["blimp"]
    # results of another model are refused
    with pytest.raises(BabyMergeError, match="not of model 'other'"):
        build(
            root / "results" / "main", "other", track="strict", sizes=json.loads(sizes.read_text()), allow_partial=True
        )


def test_vqa_predictions_are_the_pipelines(tmp_path):
    """VQA entries from lm-eval samples: ids ``vqa_<n>`` in data order, ``pred`` the chosen ``" " + answer``,
    the first one on a tie (the right one), as the pipeline's rank_and_evaluate writes them."""
    from babymerge.babylm.submission2025 import full_entry

    docs = [
        {"preds": [" red", " blue", " two"]},
        {"preds": [" yes", " no", " yes"]},
        {"preds": [" cat", " dog", " car"]},
    ]
    lls = [[-3.0, -1.0, -2.0], [-1.0, -2.0, -1.0], [-0.5, -0.7, -0.9]]
    samples = [{"doc_id": i, "doc": d, "resps": [[[x, False]] for x in ll]} for i, (d, ll) in enumerate(zip(docs, lls))]
    assert full_entry("vqa", "vqa", samples) == {
        "predictions": [
            {"id": "vqa_0", "pred": " blue"},
            {"id": "vqa_1", "pred": " yes"},
            {"id": "vqa_2", "pred": " cat"},
        ]
    }


def test_devbench_and_glue_from_the_pipelines_folder(tmp_path):
    """DevBench matrices are copied as collate_preds copies them (``array.tolist()`` under
    ``devbench/<name>/predictions``), after its shape and dtype checks; GLUE files are merged."""
    import numpy as np

    from babymerge.babylm.submission2025 import pipeline_parts

    folder = tmp_path / "main"
    (folder / "zero_shot" / "devbench").mkdir(parents=True)
    shapes = {"lex-viz_vocab": (3, 4, 1), "trog": (2, 4, 1), "things": (5, 5)}
    arrays = {name: np.random.default_rng(0).random(shape) for name, shape in shapes.items()}
    for name, file in (
        ("lex-viz_vocab", "lex-viz_vocab.npy"),
        ("trog", "gram-trog.npy"),
        ("things", "sem-things_pairwise_sims.npy"),
    ):
        np.save(folder / "zero_shot" / "devbench" / file, arrays[name])
    (folder / "finetune" / "rte").mkdir(parents=True)
    (folder / "finetune" / "rte" / "predictions.json").write_text(
        json.dumps({"rte": {"predictions": [{"id": "rte_0", "pred": 1}]}})
    )
    missing = []
    parts = pipeline_parts(folder, "causal", "multimodal", {"rte": 1, "devbench": shapes}, missing)
    assert parts["devbench"] == {
        "lex-viz_visual": {"predictions": arrays["lex-viz_vocab"].tolist()},
        "trog": {"predictions": arrays["trog"].tolist()},
        "things": {"predictions": arrays["things"].tolist()},
    }
    assert parts["glue"] == {"rte": {"predictions": [{"id": "rte_0", "pred": 1}]}}
    assert missing == ["glue/boolq", "glue/mnli", "glue/mrpc", "glue/multirc", "glue/qqp", "glue/wsc", "aoa"]
    np.save(folder / "zero_shot" / "devbench" / "gram-trog.npy", arrays["trog"].astype(int))
    with pytest.raises(BabyMergeError, match="DevBench trog must be a float array"):
        pipeline_parts(folder, "causal", "multimodal", {"rte": 1, "devbench": shapes}, [])


def write_all_glue(data: Path, valid_sizes: dict[str, int]) -> None:
    """The seven tasks' files in the pipeline's field layout (boolq, mrpc, qqp from rte-like pairs)."""
    renames = {"boolq": ("question", "passage"), "mrpc": ("sentence1", "sentence2"), "qqp": ("question1", "question2")}
    folder = data / "full_eval" / "glue_filtered"
    folder.mkdir(parents=True)
    for k, task in enumerate(GLUE):
        for split, n in (("train", 8), ("valid", valid_sizes[task])):
            if task in renames:
                first, second = renames[task]
                rows = [{first: r["sentence1"], second: r["sentence2"], "label": r["label"], "idx": r["idx"]}
                        for r in glue_rows("rte", n, 10 * k + len(split))]  # fmt: skip
            else:
                rows = glue_rows(task, n, 10 * k + len(split))
            (folder / f"{task}.{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@needs_pipeline
def test_glue_from_our_finetuning_equals_collate_preds(both, toy, tmp_path, capsys):
    """``python -m train.finetune --tasks all`` writes results collate_preds collates, and
    ``--glue-results`` puts them in the submission exactly as collate_preds does (the whole file
    compared, the pipeline's results folder with our fine-tuning in place of its made-up GLUE)."""
    from train.finetune import main as finetune

    root, made_up, sizes = both
    data = tmp_path / "evaluation_data"
    write_all_glue(data, {task: json.loads(sizes.read_text())["full"][task] for task in GLUE})
    argv = ["--model", str(toy.mm), "--data", str(data), "--tasks", "all", "--epochs", "1", "--batch-size", "4"]
    assert finetune([*argv, "--out", str(tmp_path / "ft")]) == 0
    ours_glue = tmp_path / "ft" / "mm" / "main"

    theirs = shutil.copytree(root / "pipeline_results", tmp_path / "pipeline_results", symlinks=True)
    shutil.rmtree(theirs / "model" / "main" / "finetune")
    shutil.copytree(ours_glue / "finetune", theirs / "model" / "main" / "finetune")
    (theirs / "model" / "all_full_preds_and_fast_scores_causal.json").unlink()
    python(["-c", COLLATE, str(root / "sizes.json"), "--model_path_or_name", "model", "--backend", "causal",
            "--results_dir", str(theirs), "--fast", "--track", "strict",
            "--fast_eval_dir", str(root / "evaluation_data" / "fast_eval")], tmp_path, PYTHONPATH=str(PIPELINE))  # fmt: skip
    reference = json.loads((theirs / "model" / "all_full_preds_and_fast_scores_causal.json").read_text())

    common = ["submit", "--format", "2025", "--results", str(root / "results" / "main"), "--model", "model",
              "--fast-results", str(root / "results" / "fast"), "--track", "strict", "--sizes", str(sizes)]  # fmt: skip
    pipeline = ["--pipeline-results", str(root / "pipeline_results" / "model" / "main")]
    assert cli([*common, *pipeline, "--glue-results", str(ours_glue), "--out", str(tmp_path / "sub")]) == 0
    ours = json.loads((tmp_path / "sub" / "all_full_preds_and_fast_scores_causal.json").read_text())
    assert ours["glue"] != json.loads(made_up.read_text())["glue"]  # ours, not the pipeline folder's made-up files
    assert_same(ours, reference)

    # our results alone (no pipeline folder): GLUE is filled, only AoA is listed missing
    capsys.readouterr()
    assert cli([*common, "--glue-results", str(ours_glue), "--allow-partial", "--out", str(tmp_path / "partial")]) == 0
    assert "1 parts missing: aoa" in capsys.readouterr().out
    partial = json.loads((tmp_path / "partial" / "all_full_preds_and_fast_scores_causal.json").read_text())
    assert partial["glue"] == reference["glue"]
    # the results root instead of its <model>/main folder: one clear error
    with pytest.raises(BabyMergeError, match="no finetune/ folder"):
        build(root / "results" / "main", "model", track="strict", sizes=json.loads(sizes.read_text()),
              glue_results=tmp_path / "ft", allow_partial=True)  # fmt: skip
