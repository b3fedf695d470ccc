"""``babymerge submit --format 2025`` (``babymerge.babylm.submission2025``) on damaged lm-eval
output, a missing --sizes file or an unwritable --out: one line saying what, where and how to fix
it, exit 2, and nothing written. The lm-eval output is written by hand (``helpers.submit``), so
no model runs."""

import json

import pytest

from babymerge.babylm.sizes import FAST_SIZES, FULL_SIZES

from conftest import tmpfs
from helpers.submit import N, error_line, submit, winoground_sample, write_results


@pytest.fixture
def sizes(tmp_path):
    """The official counts, but N for winoground (for --format 2025)."""
    path = tmp_path / "sizes.json"
    path.write_text(json.dumps({"full": {**FULL_SIZES, "winoground": N}, "fast": FAST_SIZES}))
    return path


def submit2025(results, sizes, out, *args):
    return submit("--format", "2025", "--results", results, "--model", "mm", "--out", out, "--sizes", sizes,
                  "--allow-partial", *args)  # fmt: skip


def test_fixtures_make_a_2025_submission(tmp_path, sizes):
    """The hand-written lm-eval output is accepted as it is, so each damage below is what is refused."""
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
