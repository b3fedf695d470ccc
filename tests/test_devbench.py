"""`babymerge devbench` against the BabyLM 2025 pipeline's own DevBench code.

The data folder is laid out as the pipeline's ``devbench/download_data.sh`` lays it out
(``assets/<task>/manifest.csv`` + images, ``assets/lex-viz_vocab/images`` a link to the
THINGS pictures, ``evals/<task>/`` the human data), with the first rows of the pipeline's own
manifests (TROG's last row too: its text holds commas, quoted) and its human CSVs; the
pictures are drawn here, and the THINGS human similarity matrix (an OSF download) is a random
symmetric one. The model: the tiny random BabyLLaVA and DINOv2 of ``demo.toy``.

References: a hand forward pass of the pipeline's prompt through the checkpoint's own
``AutoProcessor`` and model code (``-model(**enc, labels=input_ids).loss`` and the mean last
hidden state, as ``model_classes/babylm_models.py`` calls them), sklearn's cosine similarity,
and the pipeline's ``comparison/`` and ``collate_preds`` run unmodified as subprocesses.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from babymerge import BabyMergeError
from babymerge.babylm import devbench
from babymerge.cli import main as cli
from babymerge.merge import merge

from conftest import PIPELINE, needs_pipeline
from helpers.data import draw

MANIFESTS = PIPELINE / "evaluation_pipeline" / "devbench" / "manifests"
HUMAN = PIPELINE / "evaluation_pipeline" / "devbench" / "data_human"
ROWS = {"lex-viz_vocab": [0, 1, 2, 118], "gram-trog": [0, 1, 75], "sem-things": list(range(0, 1854, 200))}
pytestmark = needs_pipeline  # the manifests and the comparison code are the pipeline's


def build_devbench(root: Path) -> Path:
    """evaluation_data/full_eval/devbench as download_data.sh leaves it, a few trials per task."""
    data = root / "devbench"
    for task, rows in ROWS.items():
        (data / "assets" / task).mkdir(parents=True)
        (data / "evals" / task).mkdir(parents=True)
        lines = (MANIFESTS / f"{task}.csv").read_text(encoding="utf-8").splitlines()  # the BOM stays in line 0
        (data / "assets" / task / "manifest.csv").write_text("\n".join([lines[0]] + [lines[1 + r] for r in rows]))
    (data / "assets" / "sem-things" / "object_images_CC0").mkdir()
    (data / "assets" / "lex-viz_vocab" / "images").symlink_to(data / "assets" / "sem-things" / "object_images_CC0")
    for task in ("lex-viz_vocab", "gram-trog"):
        (data / "evals" / task / "human.csv").write_text((HUMAN / f"{task}_human.csv").read_text())
    for task in ROWS:
        for trial in devbench.read_manifest(data, task):
            for path in trial.images:
                if not path.exists():
                    draw(path, path.name)
    from scipy.io import savemat

    n = len(ROWS["sem-things"])
    sim = np.random.default_rng(0).random((n, n))
    savemat(data / "evals" / "sem-things" / "spose_similarity.mat", {"spose_sim": (sim + sim.T) / 2})
    return data


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build_devbench(tmp_path_factory.mktemp("devbench_data"))


@pytest.fixture(scope="module")
def ours(toy, data, tmp_path_factory):
    """`babymerge devbench` on the toy model merged at load time (alpha 0.4)."""
    out = tmp_path_factory.mktemp("devbench_out") / "results" / "toy" / "main"
    args = ["devbench", "--model", str(toy.mm), "--lang", str(toy.lang), "--alpha", "0.4", "--data", str(data)]
    assert cli([*args, "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    return out / "zero_shot" / "devbench"


def pipeline_way(checkpoint: Path, data: Path):
    """Scores and THINGS representations by hand, as model_classes/babylm_models.py gets them."""
    from transformers import AutoModelForCausalLM, AutoProcessor

    model = AutoModelForCausalLM.from_pretrained(checkpoint, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(checkpoint, trust_remote_code=True)
    scores = {}
    with torch.no_grad():
        for task in devbench.CHOICE_TASKS:
            trials = []
            for trial in devbench.read_manifest(data, task):
                sims = np.zeros((4, 1))
                for i, path in enumerate(trial.images):
                    image = Image.open(path).convert("RGB")
                    enc = processor(
                        images=image, text=f"The caption for this image is: {trial.texts[0]}.", return_tensors="pt"
                    )
                    enc.pop("token_type_ids", None)
                    sims[i, 0] = -model(**enc, labels=enc["input_ids"]).loss.item()
                trials.append(sims)
            scores[task] = np.stack(trials)
        images = [Image.open(t.images[0]).convert("RGB") for t in devbench.read_manifest(data, "sem-things")]
        enc = processor(images=images, text=[" "] * len(images), return_tensors="pt")
        enc.pop("token_type_ids", None)
        scores["sem-things"] = model(**enc, output_hidden_states=True).hidden_states[-1].mean(dim=1).numpy()
    return scores


def test_scores_equal_a_hand_forward_pass_of_the_pipelines_prompt(toy, data, ours, tmp_path):
    merged = merge(toy.mm, toy.lang, "linear", 0.4, out=tmp_path / "merged", progress=False).out
    reference = pipeline_way(merged, data)
    for task, shape in (("lex-viz_vocab", (4, 4, 1)), ("gram-trog", (3, 4, 1)), ("sem-things", (10, 64))):
        array = np.load(ours / f"{task}.npy")
        assert array.shape == shape and array.dtype.kind == "f", task
        np.testing.assert_allclose(array, reference[task], rtol=1e-5, atol=1e-5, err_msg=task)
    assert np.ptp(reference["gram-trog"][:, :, 0], axis=1).min() > 1e-6, "the image must matter"
    from sklearn.metrics.pairwise import cosine_similarity

    pairwise = np.load(ours / "sem-things_pairwise_sims.npy")
    np.testing.assert_allclose(pairwise, cosine_similarity(reference["sem-things"]), atol=1e-5)


@pytest.mark.slow
def test_the_pipelines_comparison_accepts_our_files(toy, data, tmp_path, capsys):
    """`--pipeline` runs devbench/comparison/ unmodified on the files written; its numbers are printed and kept."""
    args = [
        "devbench",
        "--model",
        str(toy.mm),
        "--data",
        str(data),
        "--out",
        str(tmp_path),
        "--pipeline",
        str(PIPELINE),
    ]
    assert cli([*args, "--no-progress", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    ours = tmp_path / "zero_shot" / "devbench"
    summary = json.loads((ours / "devbench_scores.json").read_text())
    comparison = summary["pipeline_comparison"]
    for task, result in comparison.items():
        assert f"  {task}: {result['summary']}" in printed
    vv, trog = comparison["lex-viz_vocab"]["table"], comparison["gram-trog"]["table"]
    with (HUMAN / "lex-viz_vocab_human.csv").open() as f:
        age_bins = sorted({int(row["age_bin"]) for row in csv.DictReader(f)})
    assert [row["age_bin"] for row in vv] == age_bins == [4, 7, 10, 25]  # one fit per age bin of the human data
    for rows, task in ((vv, "lex-viz_vocab"), (trog, "gram-trog")):
        scores = np.load(ours / f"{task}.npy")[:, :, 0]
        right = np.mean([s[0] > max(s[1:]) for s in scores])
        assert all(row["accuracy"] == right == summary["accuracy"][task] for row in rows)
        assert all(0.025 <= row["beta"] <= 40 and np.isfinite(row["kl"]) for row in rows)
    assert -1 <= comparison["sem-things"]["rsa"] <= 1
    for table in ("lex-vv_scores.csv", "gram-trog_models.csv", "sem-things_scores.csv"):
        assert (ours / table).is_file()


def no_zero_shot(folder: Path) -> Path:
    """An lm-eval output folder of model ``toy`` holding no 2025 task: the zero-shot parts stay missing."""
    (folder / "toy").mkdir(parents=True)
    (folder / "toy" / "samples_blimp_2026-01-01T00-00-00.jsonl").write_text("")
    results = {"config": {"model_args": "pretrained=toy"}}
    (folder / "toy" / "results_2026-01-01T00-00-00.json").write_text(json.dumps(results))
    return folder


def test_submission_takes_devbench_from_devbench_folder(ours, tmp_path):
    """--devbench fills the part (it wins over --pipeline-results); a missing file is listed as missing."""
    from babymerge.babylm.submission2025 import build

    sizes = {"devbench": {"things": (10, 10), "trog": (3, 4, 1), "lex-viz_vocab": (4, 4, 1)}}
    results = no_zero_shot(tmp_path / "lm_eval")
    out, missing = build(results, "toy", devbench_results=ours.parent.parent, sizes=sizes, allow_partial=True)
    assert out["devbench"]["trog"]["predictions"] == np.load(ours / "gram-trog.npy").tolist()
    assert not [m for m in missing if m.startswith("devbench")] and "glue" in missing
    partial = tmp_path / "partial"
    (partial / "zero_shot" / "devbench").mkdir(parents=True)
    (partial / "zero_shot" / "devbench" / "gram-trog.npy").write_bytes((ours / "gram-trog.npy").read_bytes())
    out, missing = build(results, "toy", devbench_results=partial, sizes=sizes, allow_partial=True)
    assert list(out["devbench"]) == ["trog"] and {"devbench/lex-viz_visual", "devbench/things"} <= set(missing)
    with pytest.raises(BabyMergeError, match="DevBench trog must be a float array of shape \\(76, 4, 1\\)"):
        build(results, "toy", devbench_results=partial, allow_partial=True)


@pytest.mark.slow
def test_submission_devbench_part_equals_collate_preds(ours, tmp_path):
    """collate_preds (its DevBench shapes and AoA count patched, every other part present and empty) on
    our files, against `babymerge submit --format 2025 --devbench`."""
    from babymerge.babylm.checkpoints import fast_revisions

    main = tmp_path / "results" / "toy" / "main"
    zero = main / "zero_shot" / "causal"
    empty = [f"finetune/{t}" for t in ("boolq", "mnli", "mrpc", "multirc", "qqp", "rte", "wsc")] + [
        f"zero_shot/causal/{t}"
        for t in (
            "blimp/blimp_filtered",
            "blimp/supplement_filtered",
            "ewok/ewok_filtered",
            "entity_tracking/entity_tracking",
            "wug_adj/wug_adj_nominalization",
            "wug_past/wug_past_tense",
            "comps/comps",
            "reading",
            "vqa/vqa_filtered",
            "winoground/winoground_filtered",
        )  # fmt: skip
    ]
    for folder in empty:
        (main / folder).mkdir(parents=True)
        (main / folder / "predictions.json").write_text("{}")
    (zero / "AoA_word").mkdir()
    aoa = {"results": [{"step": c, "target_word": "dog", "surprisal": 1.0} for c in fast_revisions()]}
    (zero / "AoA_word" / "surprisal.json").write_text(json.dumps(aoa))
    (main / "zero_shot" / "devbench").symlink_to(ours)
    shapes = {"things": [10, 10], "trog": [3, 4, 1], "lex-viz_vocab": [4, 4, 1]}
    collate = (
        "import sys\nimport evaluation_pipeline.collate_preds as c\n"
        f"c.DEVBENCH.update({shapes!r}); c.DEVBENCH.update({{k: tuple(v) for k, v in c.DEVBENCH.items()}})\n"
        "c.AOA_SIZE = 1\nsys.argv = ['collate_preds', *sys.argv[1:]]\nc.main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", collate, "--model_path_or_name", "toy", "--backend", "causal",
         "--results_dir", str(tmp_path / "results"), "--track", "multimodal"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(PIPELINE)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    theirs = json.loads((tmp_path / "results" / "toy" / "all_full_preds_and_fast_scores_causal.json").read_text())
    (tmp_path / "sizes.json").write_text(json.dumps({"devbench": shapes}))
    args = ["submit", "--format", "2025", "--results", str(no_zero_shot(tmp_path / "lm_eval")), "--model", "toy"]
    args += ["--devbench", str(ours.parent.parent), "--sizes", str(tmp_path / "sizes.json"), "--allow-partial"]
    assert cli([*args, "--out", str(tmp_path / "submission")]) == 0
    submission = json.loads((tmp_path / "submission" / "all_full_preds_and_fast_scores_causal.json").read_text())
    assert submission["devbench"] == theirs["devbench"]
    assert set(theirs["devbench"]) == {"lex-viz_visual", "trog", "things"}


def test_refusals(toy, data, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["devbench", "--model", str(toy.mm), "--out", str(out), "--no-progress", "--device", "cpu"]
    assert cli([*base, "--data", str(tmp_path / "nowhere")]) == 2
    assert "manifest.csv not found; fetch the data with the pipeline's own script" in capsys.readouterr().err
    assert cli([*base, "--data", str(data), "--model", str(toy.lang)]) == 2
    assert "is a text-only LlamaForCausalLM, not BabyLLaVA" in capsys.readouterr().err
    assert cli([*base, "--data", str(data), "--alpha", "0.3"]) == 2
    assert "--alpha 0.3 needs --lang" in capsys.readouterr().err
    assert cli([*base, "--data", str(data), "--tasks", "trog"]) == 2
    assert "unknown DevBench task(s) ['trog']" in capsys.readouterr().err
    assert not out.exists()
    (out / "zero_shot" / "devbench").mkdir(parents=True)  # someone else's folder: never replaced
    assert cli([*base, "--data", str(data), "--tasks", "gram-trog", "--overwrite"]) == 2
    assert "was not written by babymerge" in capsys.readouterr().err
