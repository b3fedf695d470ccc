"""``babymerge aoa``: word surprisals against the official pipeline's AoA extractor, the organisers' AoA
score against a hand computation, and the submission's ``aoa`` part against ``collate_preds``.

Two word-count checkpoint pairs (``chck_0.001M``, ``chck_0.002M``: tiny BabyLLaVA models and their
Llama twins, one tokenizer) and a small ``cdi_childes.json`` in the pipeline's layout, with the cases
its loader and extractor treat specially: a one-letter word (dropped), a key with spaces around it
(stripped for scoring, kept as ``target_word``), padded and empty contexts, a word of several tokens, and
for a model without BOS a text of one token (the pipeline's model call fails on it: NaN).

The pipeline loads ``from_pretrained(model, revision="chck_<N>M")``; transformers ignores ``revision``
for a local folder, so it is pointed at each pair's merged checkpoint, written to disk, one folder per
checkpoint (its 19 strict-small "checkpoints" are then one model 19 times, which the test shows).
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from babymerge import BabyMergeError
from babymerge.babylm import aoa, aoa_score
from babymerge.babylm.checkpoints import checkpoint_words, fast_revisions
from babymerge.cli import main as cli
from babymerge.tokenization import train_bpe_tokenizer
from demo.toy import synthetic_sentences

from conftest import PIPELINE, needs_pipeline, word_count_runs
from helpers.models import build_model
from helpers.pipeline import without_babymerge_env

NAMES = ["chck_0.001M", "chck_0.002M"]
ALPHA = 0.3
DATA = {
    "dog": [{"context": "The big"}, {"context": "  A small  "}, {"context": ""}],
    "a": [{"context": "The"}],  # one character: the pipeline drops it
    "xylophone": [{"context": "Every teacher sees the"}],  # not in the toy vocabulary: several tokens
    " cat ": [{"context": "This"}, {"context": "Some happy old"}, {"context": "   "}],
    "Ball": [{"context": "The girl holds the red"}],
}
SCORED = [(w, i, e["context"]) for w, es in DATA.items() if len(w) > 1 for i, e in enumerate(es)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """runs/mm and runs/lang with two word-count checkpoints each (symlinks to toy checkpoints)."""
    root = tmp_path_factory.mktemp("aoa")
    word_count_runs(root, NAMES)
    (root / "cdi_childes.json").write_text(json.dumps(DATA))
    return root


@pytest.fixture(scope="module")
def ours(runs):
    out = runs / "ours"
    aoa.run(runs / "mm", runs / "lang", ALPHA, runs / "cdi_childes.json", out, progress=False)
    return json.loads((out / "surprisal.json").read_text())


def test_surprisal_file_is_the_pipelines_layout(ours):
    assert ours["metadata"] == {"model_name": "mm", "use_bos_only": False, "total_steps": 2, "completed_steps": 2}
    rows = ours["results"]
    assert [(r["step"], r["word_count"]) for r in rows] == [(n, checkpoint_words(n)) for n in NAMES for _ in SCORED]
    assert [(r["target_word"], r["context_id"], r["context"]) for r in rows] == SCORED * 2
    assert all(isinstance(r["surprisal"], float) and r["surprisal"] > 0 for r in rows)
    first, second = rows[: len(SCORED)], rows[len(SCORED) :]
    assert all(a["surprisal"] != b["surprisal"] for a, b in zip(first, second))  # two different merges


def test_rerun_reuses_finished_checkpoints_and_refuses_other_settings(runs, ours, monkeypatch, capsys):
    out = runs / "ours"

    def no_model(*args, **kwargs):
        raise AssertionError("a finished checkpoint was computed again")

    monkeypatch.setattr("babymerge.lm_eval_model.BabyMergeLM", no_model)
    aoa.run(runs / "mm", runs / "lang", ALPHA, runs / "cdi_childes.json", out, progress=False)
    assert json.loads((out / "surprisal.json").read_text()) == ours
    args = ["aoa", "--mm", str(runs / "mm"), "--lang", str(runs / "lang"), "--data", str(runs / "cdi_childes.json")]
    assert cli([*args, "--alpha", "0.5", "--out", str(out), "--no-progress"]) == 2
    assert "written with other settings (alpha: 0.3, now 0.5); choose another --out" in capsys.readouterr().err
    foreign = runs / "foreign"
    foreign.mkdir()
    (foreign / "surprisal.json").write_text("{}")
    assert cli([*args, "--out", str(foreign), "--no-progress"]) == 2
    assert "that babymerge aoa did not write" in capsys.readouterr().err
    assert (foreign / "surprisal.json").read_text() == "{}"
    (runs / "bad.json").write_text(json.dumps({"dog": ["The big"]}))
    assert cli([*args[:-1], str(runs / "bad.json"), "--out", str(runs / "o2"), "--no-progress"]) == 2
    assert 'bad.json: \'dog\' must map to a list of {"context": "..."} objects' in capsys.readouterr().err


# -- the organisers' score, by hand ----------------------------------------------------------------------------------
A, B, D = 18.0, 4.0, -20.0  # model curves: -surprisal = A * sigmoid(B (log10(words + 1) - c)) + D
WORDS = {"ball": (6.8, 20.0), "dog": (7.3, 22.0), "cat": (7.9, 25.0), "milk": (8.4, 27.0)}  # (c, child AoA)


def synthetic(tmp_path):
    """Learning curves with known midpoints over the 28 checkpoints (two contexts each, one NaN), and a
    CDI file whose proportions follow sigmoids with known ages of acquisition; plus words either side drops."""
    rows = []
    for step in fast_revisions():
        x = math.log10(checkpoint_words(step) + 1)
        for word, (c, _) in {**WORDS, "zebra": (7.0, 0), "shoe": (7.0, 0)}.items():
            s = -(A / (1 + math.exp(-B * (x - c))) + D)
            for context_id in range(2):
                nan = word == "dog" and step == "chck_5M" and context_id == 1
                rows.append({"step": step, "word_count": checkpoint_words(step), "target_word": word,
                             "context_id": context_id, "context": "", "surprisal": math.nan if nan else s})  # fmt: skip
    header = "word,category," + ",".join(str(a) for a in range(16, 31))
    lines = [header]
    for word, (_, age) in WORDS.items():
        lines.append(f"{word},x," + ",".join(f"{1 / (1 + math.exp(-0.5 * (a - age))):.12f}" for a in range(16, 31)))
    lines.append("shoe,x,0.1,0.2" + "," * 13)  # two known proportions: no child AoA
    (tmp_path / "cdi_human.csv").write_text("\n".join(lines) + "\n")
    return {"metadata": {}, "results": rows}, tmp_path / "cdi_human.csv"


def hand_model_aoa(c: float, surprisals) -> float:
    chance = math.log2(300_000)
    threshold = chance - 0.5 * (chance - np.nanmin(surprisals))
    return c - math.log(A / (-threshold - D) - 1) / B


def test_aoa_score_equals_a_hand_computation_on_known_curves(tmp_path, capsys):
    data, cdi = synthetic(tmp_path)
    score = aoa_score.aoa_score(data, cdi)
    curves = aoa_score.learning_curves(data)
    model = [hand_model_aoa(c, curves[w][1]) for w, (c, _) in WORDS.items()]
    child = [age for _, age in WORDS.values()]
    assert score["valid_words"] == list(WORDS)  # zebra: not in the CDI; shoe: too few proportions
    assert score["child_aoas"] == pytest.approx(child, abs=1e-4)
    assert score["model_aoas"] == pytest.approx(model, abs=1e-4)
    assert score["curve_fitness"] == pytest.approx(np.corrcoef(model, child)[0, 1], abs=1e-6)
    print(f"synthetic AoA: r = {score['curve_fitness']:.6f}, hand {np.corrcoef(model, child)[0, 1]:.6f}")
    (tmp_path / "surprisal.json").write_text(json.dumps(data))
    assert cli(["aoa-score", str(tmp_path / "surprisal.json"), "--cdi", str(cdi), "--out", str(tmp_path / "r")]) == 0
    assert (
        f"AoA score (Pearson r of model vs children's ages of acquisition): {score['curve_fitness']:.3f} over 4 words"
        in capsys.readouterr().out
    )
    written = json.loads((tmp_path / "r" / "aoa_score.json").read_text())
    assert written["valid_words"] == score["valid_words"] and written["model_aoas"] == score["model_aoas"]
    assert (tmp_path / "r" / "learning_curves.png").stat().st_size > 10_000


@pytest.mark.slow
@needs_pipeline
def test_aoa_score_equals_the_pipelines_evaluator(tmp_path):
    """The same synthetic curves through the pipeline's own ``AoAEvaluator.compute_curve_fitness``."""
    data, cdi = synthetic(tmp_path)
    (tmp_path / "surprisal.json").write_text(json.dumps(data))
    code = (
        "import json, sys\nfrom evaluation_pipeline.utils import AoAEvaluator\n"
        "r = AoAEvaluator(sys.argv[1]).compute_curve_fitness(json.load(open(sys.argv[2])))\n"
        "print(json.dumps({k: r[k] for k in ('curve_fitness', 'valid_words', 'model_aoas', 'child_aoas')}))"
    )
    env = {**os.environ, "PYTHONPATH": str(PIPELINE)}
    result = subprocess.run([sys.executable, "-c", code, str(cdi), str(tmp_path / "surprisal.json")],
                            capture_output=True, text=True, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    theirs = json.loads(result.stdout.strip().splitlines()[-1])
    score = aoa_score.aoa_score(data, cdi)
    assert score["valid_words"] == theirs["valid_words"]
    assert score["model_aoas"] == pytest.approx(theirs["model_aoas"], abs=1e-6)
    assert score["child_aoas"] == pytest.approx(theirs["child_aoas"], abs=1e-6)
    assert score["curve_fitness"] == pytest.approx(theirs["curve_fitness"], abs=1e-9)


# -- the official pipeline's extractor ------------------------------------------------------------------------------
RUNNER = (
    "import json, runpy, sys\nfor argv in json.load(open(sys.argv[1])):\n"
    "    sys.argv = argv\n    runpy.run_module(argv[0], run_name='__main__')\n"
)


@pytest.fixture(scope="module")
def pipeline(runs):
    """The pipeline's AoA ``run.py``, babymerge not importable, on each pair merged at ALPHA and written to
    disk: the first with the strict-small track (19 checkpoint names), the second with ``--debug`` (5)."""
    from babymerge.merge import merge

    jobs = []
    for k, name in enumerate(NAMES):
        merged = runs / "merged" / f"pair{k}"  # the pipeline names its output folder Path(model).stem: no dots
        merge(str(runs / "mm" / name), str(runs / "lang" / name), alpha=ALPHA, out=str(merged), progress=False)
        jobs.append(["evaluation_pipeline.AoA_word.run", "--model_name", str(merged), "--backend", "causal",
                     "--track_name", "strict-small", "--word_path", str(runs / "cdi_childes.json"),
                     "--output_dir", str(runs / "pipeline"), *(["--debug"] if k else [])])  # fmt: skip
    # a plain Llama whose tokenizer adds no BOS: " cat" (empty context) is one token, which the pipeline makes NaN
    plain = build_model(runs / "plain", train_bpe_tokenizer(synthetic_sentences(1000), vocab_size=300), bos=False)
    jobs.append(["evaluation_pipeline.AoA_word.run", "--model_name", str(plain), "--backend", "causal",
                 "--word_path", str(runs / "cdi_childes.json"), "--output_dir", str(runs / "pipeline"), "--debug"])  # fmt: skip
    (runs / "jobs.json").write_text(json.dumps(jobs))
    env = without_babymerge_env(runs, PIPELINE)
    result = subprocess.run([sys.executable, "-c", RUNNER, str(runs / "jobs.json")], capture_output=True, text=True,
                            env=env, cwd=runs, timeout=1200)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return {
        name: runs / "pipeline" / folder / "main" / "zero_shot" / "causal" / "AoA_word" / "surprisal.json"
        for name, folder in (*((n, f"pair{k}") for k, n in enumerate(NAMES)), ("plain", "plain"))
    }


@pytest.mark.slow
@needs_pipeline
def test_surprisals_equal_the_pipelines_extractor(ours, pipeline):
    worst = 0.0
    for name in NAMES:
        theirs = json.loads(pipeline[name].read_text())["results"]
        steps = list(dict.fromkeys(r["step"] for r in theirs))
        assert len(steps) == (19 if name == NAMES[0] else 5)
        by_step = [[r["surprisal"] for r in theirs if r["step"] == s] for s in steps]
        assert all(values == by_step[0] for values in by_step)  # revision= ignored: one model, N times
        mine = [r for r in ours["results"] if r["step"] == name]
        first = [r for r in theirs if r["step"] == steps[0]]
        assert [(r["target_word"], r["context_id"], r["context"]) for r in first] == SCORED
        assert [(r["target_word"], r["context_id"], r["context"]) for r in mine] == SCORED
        for a, b in zip(mine, first):
            assert not math.isnan(b["surprisal"]) and a["surprisal"] == pytest.approx(b["surprisal"], abs=1e-4)
            worst = max(worst, abs(a["surprisal"] - b["surprisal"]))
    print(f"AoA surprisal, max |ours - pipeline| over {2 * len(SCORED)} (word, context, checkpoint): {worst:.2e}")


@pytest.mark.slow
@needs_pipeline
def test_a_one_token_text_is_nan_as_in_the_pipeline(runs, pipeline):
    from babymerge.lm_eval_model import BabyMergeLM

    theirs = json.loads(pipeline["plain"].read_text())["results"]
    theirs = [r["surprisal"] for r in theirs if r["step"] == theirs[0]["step"]]
    words = aoa.read_words(runs / "cdi_childes.json")
    mine = aoa.surprisals(BabyMergeLM(pretrained=str(runs / "plain"), device="cpu"), words)
    nan = [i for i, value in enumerate(theirs) if math.isnan(value)]
    assert nan == [SCORED.index((" cat ", 2, "   "))]
    assert [i for i, value in enumerate(mine) if math.isnan(value)] == nan
    assert [v for i, v in enumerate(mine) if i not in nan] == pytest.approx(
        [v for i, v in enumerate(theirs) if i not in nan], abs=1e-4
    )


COLLATE = (
    "import json, sys\nimport evaluation_pipeline.collate_preds as c\nsizes = json.load(open(sys.argv[1]))\n"
    "c.FULL_SIZES.clear(); c.FULL_SIZES.update(sizes['full'])\n"
    "c.AOA_SIZE = sizes['aoa']\nsys.argv = ['collate_preds', *sys.argv[2:]]\nc.main()\n"
)
# every other part collate_preds requires of the strict-small track: one made-up prediction each
OTHER_PARTS = {
    "blimp": "zero_shot/causal/blimp/blimp_filtered", "blimp_supplement": "zero_shot/causal/blimp/supplement_filtered",
    "ewok": "zero_shot/causal/ewok/ewok_filtered", "entity_tracking": "zero_shot/causal/entity_tracking/entity_tracking",
    "wug_adj": "zero_shot/causal/wug_adj/wug_adj_nominalization", "wug_past": "zero_shot/causal/wug_past/wug_past_tense",
    "comps": "zero_shot/causal/comps/comps", "reading": "zero_shot/causal/reading",
    **{t: f"finetune/{t}" for t in ("boolq", "mnli", "mrpc", "multirc", "qqp", "rte", "wsc")},
}  # fmt: skip


@pytest.mark.slow
@needs_pipeline
def test_submission_aoa_part_equals_collate_preds(runs, pipeline, tmp_path, monkeypatch):
    """collate_preds embeds the pipeline's own surprisal.json (its 19 strict-small names, one local model);
    ours comes from babymerge aoa on runs whose 19 chck_ pairs all hold that pair, under the same model name."""
    from babymerge.babylm import submission2025

    main = tmp_path / "results" / "model" / "main"
    for task, folder in OTHER_PARTS.items():
        (main / folder).mkdir(parents=True)
        (main / folder / "predictions.json").write_text(json.dumps({task: {"predictions": [{"id": 0, "pred": 0}]}}))
    (main / "zero_shot/causal/AoA_word").mkdir(parents=True)
    (main / "zero_shot/causal/AoA_word/surprisal.json").write_bytes(pipeline[NAMES[0]].read_bytes())
    sizes = {"full": {task: 1 for task in OTHER_PARTS}, "aoa": len(SCORED)}
    (tmp_path / "sizes.json").write_text(json.dumps(sizes))
    result = subprocess.run(
        [sys.executable, "-c", COLLATE, str(tmp_path / "sizes.json"), "--model_path_or_name", "model",
         "--backend", "causal", "--results_dir", str(tmp_path / "results"), "--track", "strict-small"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(PIPELINE)}, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    theirs = json.loads((tmp_path / "results/model/all_full_preds_and_fast_scores_causal.json").read_text())["aoa"]

    for run in ("mm", "lang"):
        (tmp_path / run).mkdir()
        for name in fast_revisions("strict-small"):
            (tmp_path / run / name).symlink_to(runs / run / NAMES[0])
    merged = str(runs / "merged" / "pair0")  # the pipeline's metadata.model_name: what it was given
    args = ["aoa", "--mm", str(tmp_path / "mm"), "--lang", str(tmp_path / "lang"), "--alpha", str(ALPHA),
            "--data", str(runs / "cdi_childes.json"), "--out", str(tmp_path / "aoa"), "--model-name", merged,
            "--no-progress"]  # fmt: skip
    assert cli(args) == 0
    monkeypatch.setattr(submission2025, "collect", lambda *a, **k: {})  # no zero-shot results: the AoA part only
    built, missing = submission2025.build(
        tmp_path / "none", "model", track="strict-small", sizes=sizes, allow_partial=True, aoa=tmp_path / "aoa"
    )
    assert "aoa" not in missing
    ours = built["aoa"]
    assert ours["metadata"] == theirs["metadata"]
    assert len(ours["results"]) == len(theirs["results"]) == 19 * len(SCORED)
    for a, b in zip(ours["results"], theirs["results"]):
        assert {**a, "surprisal": 0} == {**b, "surprisal": 0}
        assert a["surprisal"] == pytest.approx(b["surprisal"], abs=1e-4)
    with pytest.raises(
        BabyMergeError, match=r"AoA needs 9 surprisals for each of the 19 checkpoints chck_1M..chck_100M"
    ):
        submission2025.build(
            tmp_path / "none", "model", track="strict-small", sizes={**sizes, "aoa": 9}, allow_partial=True,
            aoa=tmp_path / "aoa",
        )  # fmt: skip
