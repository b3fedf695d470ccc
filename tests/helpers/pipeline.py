"""Running code as a machine without babymerge would (the official 2025 pipeline as a client)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO

# A checkpoint written before the self-contained code files existed, with its tiny encoder
# (``make_legacy_checkpoint.py`` built it; ``expected.json`` holds its recorded outputs).
LEGACY_CHECKPOINT = REPO / "tests" / "fixtures" / "legacy_babyllava"

# Run in a subprocess, this makes `import babymerge` fail (a meta path finder refuses it and the
# worktree is taken off sys.path), as on a machine where only transformers is installed.
BLOCKER = """
import sys
class _NoBabymerge:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("babymerge", "_babymerge_hooks", "train"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, _NoBabymerge())
sys.path[:] = [p for p in sys.path if p.rstrip("/") != %r]
"""

# The pipeline's collate_preds accepts each GLUE prediction file given as an argument (at our
# tiny files' sizes); prints the sorted task names.
COLLATE_CHECK = """
import json, pathlib, sys
from evaluation_pipeline import collate_preds
glue = {}
for path in sys.argv[1:]:
    results = collate_preds._load_results(pathlib.Path(path))
    (task,) = results
    collate_preds.FULL_SIZES[task] = len(results[task]["predictions"])  # our tiny files' size, not the real one
    assert collate_preds._check_size(task, results, fast=False), path
    glue |= results
print(json.dumps(sorted(glue)))
"""


def without_babymerge_env(tmp_path: Path, *extra_paths) -> dict:
    """Environment whose Python cannot import babymerge (sitecustomize installs the blocker)."""
    block = tmp_path / "block"
    block.mkdir(exist_ok=True)
    (block / "sitecustomize.py").write_text(BLOCKER % str(REPO))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(PYTHONPATH=os.pathsep.join([str(block), *map(str, extra_paths)]), HF_MODULES_CACHE=str(tmp_path / "hf_modules"),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")  # fmt: skip
    return env


def run_without_babymerge(tmp_path, code: str, *extra_paths, cwd=None):
    """``python -c code`` where ``import babymerge`` fails (checked first), ``extra_paths`` on PYTHONPATH."""
    env = without_babymerge_env(tmp_path, *extra_paths)
    proof = subprocess.run(
        [sys.executable, "-c", "import babymerge"], capture_output=True, text=True, env=env, cwd=cwd or tmp_path
    )
    assert proof.returncode != 0 and "No module named 'babymerge'" in proof.stderr, proof.stderr[-500:]
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd or tmp_path, timeout=600
    )


def read_results(out, name, task="rte"):
    """Predictions and scores of a fine-tuning run in the pipeline's results layout."""
    folder = out / name / "main" / "finetune" / task
    preds = [p["pred"] for p in json.loads((folder / "predictions.json").read_text())[task]["predictions"]]
    scores = {k: float(v) for k, v in (line.split(": ") for line in (folder / "results.txt").read_text().splitlines())}
    return preds, scores
