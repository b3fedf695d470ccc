"""The BabyLM 2025 pipeline's DevBench comparison with human data, run unmodified on our files.

The pipeline's ``evaluation_pipeline/devbench/comparison/`` (``viz_vocab.py``, ``trog.py``,
``things.py``) reads the human data at import time from ``evaluation_data/full_eval/devbench/
evals/<task>/`` and the model's file from ``results/<model>/<revision>/zero_shot/devbench/``,
both relative to the working directory, and writes its tables beside the model's file. So each
task runs in a subprocess whose working directory is a scratch folder holding exactly that:
a link to the user's DevBench folder and copies of our ``.npy`` files. Its numbers come back as
JSON, its CSV tables are copied into our output folder.

What it computes (read from its code): visual vocabulary and TROG: accuracy, and the mean KL
divergence between the children's choice proportions and a softmax of the model's scores,
the softmax temperature ``beta`` fitted per age bin (nlopt, DIRECT-L, 0.025..40); THINGS: the
Spearman correlation of the lower triangles of the model's cosine similarity matrix and the
human similarity matrix ``spose_similarity.mat`` (RSA). It needs pandas, scipy, scikit-learn
and nlopt in the Python that runs babymerge (``pip install nlopt scikit-learn``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import BabyMergeError

MODULES = {"lex-viz_vocab": "viz_vocab", "gram-trog": "trog", "sem-things": "things"}
INPUTS = {"lex-viz_vocab": "lex-viz_vocab.npy", "gram-trog": "gram-trog.npy", "sem-things": "sem-things.npy"}
TABLES = {
    "lex-viz_vocab": "lex-vv_scores.csv",
    "gram-trog": "gram-trog_models.csv",
    "sem-things": "sem-things_scores.csv",
}
HUMAN = {"lex-viz_vocab": "human.csv", "gram-trog": "human.csv", "sem-things": "spose_similarity.mat"}
TAG = "BABYMERGE_DEVBENCH_RESULT "
# Runs in the scratch folder with the pipeline on PYTHONPATH; prints the numbers as one JSON line.
# The pipeline was written for pandas 2 (its requirements pin 2.2.3): under pandas 3, TROG's
# ``fillna(0)`` over the human data's text column fails on the new string dtype, so the
# subprocess restores pandas 2's object columns first (the code itself runs unmodified).
SCRIPT = f"""
import importlib, json, sys, warnings
import pandas
warnings.simplefilter("ignore", FutureWarning)
warnings.filterwarnings("ignore", message=".*future.infer_string")
if int(pandas.__version__.split(".")[0]) >= 3:
    pandas.set_option("future.infer_string", False)
task, module, path = sys.argv[1:4]
result = importlib.import_module("evaluation_pipeline.devbench.comparison." + module).get_scores(path)
out = {{"rsa": float(result)}} if task == "sem-things" else {{"table": result.to_dict(orient="records")}}
print({TAG!r} + json.dumps(out, default=float))
"""


def human_data(data: str | Path, task: str) -> Path:
    return Path(data) / "evals" / task / HUMAN[task]


def check(pipeline: str | Path, data: str | Path, tasks) -> None:
    """Refuse, before any scoring, a pipeline folder or human data that the comparison would miss."""
    if not (Path(pipeline) / "evaluation_pipeline" / "devbench" / "comparison").is_dir():
        raise BabyMergeError(
            f"--pipeline {pipeline}: no evaluation_pipeline/devbench/comparison/ there; give the folder of a "
            "checkout of the BabyLM 2025 evaluation pipeline (github.com/babylm/evaluation-pipeline-2025)"
        )
    for task in tasks:
        if not human_data(data, task).is_file():
            raise BabyMergeError(
                f"DevBench {task}: the human data {human_data(data, task)} is missing; the pipeline's "
                "devbench/download_data.sh puts it there (or leave out --pipeline to skip the comparison)"
            )


def _summary(task: str, result: dict) -> str:
    if task == "sem-things":
        return f"RSA with human similarity judgements (Spearman) {result['rsa']:.4f}"
    rows = result["table"]
    fits = ", ".join(
        (f"age {r['age_bin']}: " if "age_bin" in r else "") + f"KL {r['kl']:.4f} (beta {r['beta']:.3g})" for r in rows
    )
    return f"accuracy {rows[0]['accuracy']:.4f}; {fits}"


def compare(pipeline: str | Path, data: str | Path, files: str | Path, tasks) -> dict[str, dict]:
    """Run the pipeline's comparison on the ``.npy`` files in ``files``; its tables are copied
    there. Returns ``{task: {"rsa"|"table": ..., "summary": one line}}``."""
    pipeline, data, files = Path(pipeline).resolve(), Path(data).resolve(), Path(files)
    check(pipeline, data, tasks)
    results = {}
    with tempfile.TemporaryDirectory(prefix="babymerge-devbench-") as scratch:
        scratch = Path(scratch)
        (scratch / "evaluation_data" / "full_eval").mkdir(parents=True)
        (scratch / "evaluation_data" / "full_eval" / "devbench").symlink_to(data, target_is_directory=True)
        here = scratch / "results" / "model" / "main" / "zero_shot" / "devbench"
        here.mkdir(parents=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(pipeline), os.environ.get("PYTHONPATH")]))}
        for task in tasks:
            shutil.copyfile(files / INPUTS[task], here / INPUTS[task])  # a copy: things.py writes beside it
            relative = f"results/model/main/zero_shot/devbench/{INPUTS[task]}"  # it parses the model name from it
            done = subprocess.run(
                [sys.executable, "-c", SCRIPT, task, MODULES[task], relative],
                cwd=scratch, env=env, capture_output=True, text=True,
            )  # fmt: skip
            lines = [line for line in done.stdout.splitlines() if line.startswith(TAG)]
            if done.returncode or not lines:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                hint = " (pip install nlopt scikit-learn)" if "ModuleNotFoundError" in last else ""
                raise BabyMergeError(f"the pipeline's DevBench comparison failed on {task}: {last}{hint}")
            result = json.loads(lines[-1][len(TAG) :])
            result["summary"] = _summary(task, result)
            results[task] = result
            shutil.copyfile(here / TABLES[task], files / TABLES[task])
    return results
