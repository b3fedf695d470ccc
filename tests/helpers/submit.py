"""lm-eval ``--log_samples`` output written by hand (samples and results files as lm-eval lays
them out), and ``babymerge submit`` run on it in a subprocess, so that no model runs."""

import json
import subprocess
import sys

STAMP = "2025-01-01T00-00-00.000000"
N = 3  # items per task


def write_results(root, task: str, samples: list[dict], scores: dict | None = None):
    """``root/mm/``: one task's samples file and the results file beside it, as lm_eval --log_samples writes them."""
    folder = root / "mm"
    folder.mkdir(parents=True)
    (folder / f"samples_{task}_{STAMP}.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    results = {"config": {"model_args": "pretrained=runs/mm"}, "results": {task: scores or {"acc,none": 0.5}}}
    (folder / f"results_{STAMP}.json").write_text(json.dumps(results))
    return root


def blimp_sample(i: int) -> dict:
    """Item ``i`` of a BLiMP task (``arguments`` as lm-eval logs them), the good sentence scored higher."""
    good, bad = f" The dog {i} sees.", f" The dog {i} see."
    return {"doc_id": i, "doc": {"sentence_good": good.strip(), "sentence_bad": bad.strip()},
            "arguments": {"gen_args_0": {"arg_0": "", "arg_1": good}, "gen_args_1": {"arg_0": "", "arg_1": bad}},
            "resps": [[["-1.5", "False"]], [["-2.5", "False"]]]}  # fmt: skip


def winoground_sample(i: int) -> dict:
    """Item ``i`` of ``winoground_filtered``, the first caption scored higher."""
    return {"doc_id": i, "doc": {"caption_0": f"a dog {i}", "caption_1": f"a cat {i}"},
            "resps": [[["-1.0", "False"]], [["-3.0", "False"]]]}  # fmt: skip


def submit(*args) -> subprocess.CompletedProcess:
    """``python -m babymerge submit ARGS``."""
    return subprocess.run(
        [sys.executable, "-m", "babymerge", "submit", *map(str, args)], capture_output=True, text=True
    )


def error_line(proc) -> str:
    """The one line of an error exit."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("babymerge: error: "), proc.stderr
    return lines[0]
