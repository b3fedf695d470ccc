"""`babymerge submit` on damaged input or an unwritable --out: one line saying what, where and how
to fix it, exit 2, and nothing half-written (no partial file, no temporary). The lm-eval output is
written by hand here (samples and results files as lm-eval lays them out), so no model runs."""

import json
import random
import subprocess
import sys

import pytest

from babymerge.babylm.submission2025 import FAST_SIZES, FULL_SIZES

from conftest import tmpfs

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
    good, bad = f" The dog {i} sees.", f" The dog {i} see."
    return {"doc_id": i, "doc": {"sentence_good": good.strip(), "sentence_bad": bad.strip()},
            "arguments": {"gen_args_0": {"arg_0": "", "arg_1": good}, "gen_args_1": {"arg_0": "", "arg_1": bad}},
            "resps": [[["-1.5", "False"]], [["-2.5", "False"]]]}  # fmt: skip


def winoground_sample(i: int) -> dict:
    return {"doc_id": i, "doc": {"caption_0": f"a dog {i}", "caption_1": f"a cat {i}"},
            "resps": [[["-1.0", "False"]], [["-3.0", "False"]]]}  # fmt: skip


@pytest.fixture
def data(tmp_path):
    """Evaluation data of one BLiMP paradigm of N items (for --format 2024)."""
    (tmp_path / "data" / "blimp_filtered").mkdir(parents=True)
    (tmp_path / "data" / "blimp_filtered" / "wh_island.jsonl").write_text("{}\n" * N)
    return tmp_path / "data"


@pytest.fixture
def sizes(tmp_path):
    """The official counts, but N for winoground (for --format 2025)."""
    path = tmp_path / "sizes.json"
    path.write_text(json.dumps({"full": {**FULL_SIZES, "winoground": N}, "fast": FAST_SIZES}))
    return path


def submit(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "babymerge", "submit", *map(str, args)], capture_output=True, text=True
    )


def submit2024(results, data, out, *args):
    return submit("--results", results, "--model", "mm", "--out", out, "--data", data, "--allow-partial", *args)


def submit2025(results, sizes, out, *args):
    return submit("--format", "2025", "--results", results, "--model", "mm", "--out", out, "--sizes", sizes,
                  "--allow-partial", *args)  # fmt: skip


def error_line(proc) -> str:
    """The one line of an error exit."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("babymerge: error: "), proc.stderr
    return lines[0]


def test_fixtures_make_a_submission(tmp_path, data, sizes):
    """The hand-written lm-eval output is accepted as it is, so each damage below is what is refused."""
    results = write_results(tmp_path / "r24", "blimp_filtered_wh_island", [blimp_sample(i) for i in range(N)])
    assert submit2024(results, data, tmp_path / "out24").returncode == 0
    assert sorted(p.name for p in (tmp_path / "out24").iterdir()) == [
        "mm_summary.json",
        "mm_textonly_predictions.json.gz",
    ]
    results = write_results(tmp_path / "r25", "winoground_filtered", [winoground_sample(i) for i in range(N)])
    assert submit2025(results, sizes, tmp_path / "out25").returncode == 0
    written = json.loads((tmp_path / "out25" / "all_full_preds_and_fast_scores_causal.json").read_text())
    assert written["winoground"]["winoground"]["predictions"][2] == {"id": "winoground_2", "pred": "a dog 2"}


def test_2025_a_cut_off_samples_line_is_named_by_file_and_line(tmp_path, sizes):
    """A cut-off samples line: one line naming the file and line, exit 2, nothing written."""
    results = write_results(tmp_path, "winoground_filtered", [winoground_sample(i) for i in range(N)])
    samples = next(results.rglob("samples_*.jsonl"))
    samples.write_bytes(samples.read_bytes()[:-20])  # a crash cut the last line
    line = error_line(submit2025(results, sizes, tmp_path / "out"))
    assert f"{samples} line 3 is not JSON" in line and "cut off?" in line and "rerun lm_eval with --log_samples" in line
    assert not (tmp_path / "out").exists()


def test_2025_a_sample_without_doc_id_is_named_by_file_and_line(tmp_path, sizes):
    """A sample without doc_id: one line naming the file and line, exit 2, nothing written."""
    broken = [winoground_sample(i) for i in range(N)]
    del broken[1]["doc_id"]
    results = write_results(tmp_path, "winoground_filtered", broken)
    line = error_line(submit2025(results, sizes, tmp_path / "out"))
    assert f"{next(results.rglob('samples_*.jsonl'))} line 2 has no 'doc_id' field" in line
    assert not (tmp_path / "out").exists()


def test_2025_a_missing_sizes_file_is_one_line(tmp_path, sizes):
    results = write_results(tmp_path, "winoground_filtered", [winoground_sample(i) for i in range(N)])
    line = error_line(submit2025(results, tmp_path / "nowhere.json", tmp_path / "out"))
    assert f"--sizes {tmp_path / 'nowhere.json'}: not a readable JSON file" in line and "No such file" in line
    assert "leave --sizes out for the official counts" in line
    assert not (tmp_path / "out").exists()


def test_2025_a_read_only_out_is_one_line(tmp_path, sizes):
    """A read-only --out (or a folder below it): one line naming it, exit 2, nothing written."""
    results = write_results(tmp_path, "winoground_filtered", [winoground_sample(i) for i in range(N)])
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        for out in (ro, ro / "submission"):
            line = error_line(submit2025(results, sizes, out))
            assert (
                f"cannot write output '{out}" in line and "the file system is read-only; choose another --out" in line
            )
        assert list(ro.iterdir()) == []


def test_2024_random_bytes_for_samples_are_one_line(tmp_path, data):
    """Random bytes as the samples file: one line naming the file and line, exit 2, nothing written."""
    results = write_results(tmp_path, "blimp_filtered_wh_island", [blimp_sample(i) for i in range(N)])
    samples = next(results.rglob("samples_*.jsonl"))
    samples.write_bytes(b"\xff\xfe" + random.Random(0).randbytes(4096))
    line = error_line(submit2024(results, data, tmp_path / "out"))
    assert f"{samples} line 1 is not UTF-8 text" in line and "rerun lm_eval with --log_samples" in line
    assert not (tmp_path / "out").exists()


def test_2024_out_below_a_file_is_one_line(tmp_path, data):
    """--out that is a file, or lies below one: one line naming the file, which stays unchanged."""
    results = write_results(tmp_path, "blimp_filtered_wh_island", [blimp_sample(i) for i in range(N)])
    (tmp_path / "file").write_text("mine\n")
    for out in (tmp_path / "file", tmp_path / "file" / "submission"):
        line = error_line(submit2024(results, data, out))
        assert f"'{tmp_path / 'file'}' is a file, not a directory; choose another --out" in line
    assert (tmp_path / "file").read_text() == "mine\n"


def test_2024_a_full_disk_writes_both_files_or_neither(tmp_path, data):
    """A summary (the scores lm-eval reported) too big for the disk: one line, and the prediction
    file and its summary are written together or not at all (the earlier pair stays)."""
    samples = [blimp_sample(i) for i in range(N)]
    small = write_results(tmp_path / "small", "blimp_filtered_wh_island", samples)
    big = write_results(tmp_path / "big", "blimp_filtered_wh_island", samples,
                        scores={f"metric_{i},none": i / 3 for i in range(40_000)})  # fmt: skip
    with tmpfs(tmp_path / "full", "1m") as full:
        assert submit2024(small, data, full).returncode == 0
        before = {p.name: p.read_bytes() for p in full.iterdir()}
        line = error_line(submit2024(big, data, full))
        assert "no space left on the device (or quota exceeded) while writing output" in line
        assert "free some space or choose another --out" in line
        assert {p.name: p.read_bytes() for p in full.iterdir()} == before  # the earlier pair, no temporaries
