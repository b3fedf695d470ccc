"""``babymerge submit`` (the 2024 format, ``babymerge.babylm.submission2024``) on damaged lm-eval
output or an unwritable --out: one line saying what, where and how to fix it, exit 2, and nothing
half-written (no partial file, no temporary). The lm-eval output is written by hand
(``helpers.submit``), so no model runs."""

import random

import pytest

from conftest import tmpfs
from helpers.submit import N, blimp_sample, error_line, submit, write_results


@pytest.fixture
def data(tmp_path):
    """Evaluation data of one BLiMP paradigm of N items (for --format 2024)."""
    (tmp_path / "data" / "blimp_filtered").mkdir(parents=True)
    (tmp_path / "data" / "blimp_filtered" / "wh_island.jsonl").write_text("{}\n" * N)
    return tmp_path / "data"


def submit2024(results, data, out, *args):
    return submit("--results", results, "--model", "mm", "--out", out, "--data", data, "--allow-partial", *args)


def test_fixtures_make_a_2024_submission(tmp_path, data):
    """The hand-written lm-eval output is accepted as it is, so each damage below is what is refused."""
    results = write_results(tmp_path / "r24", "blimp_filtered_wh_island", [blimp_sample(i) for i in range(N)])
    assert submit2024(results, data, tmp_path / "out24").returncode == 0
    assert sorted(p.name for p in (tmp_path / "out24").iterdir()) == [
        "mm_summary.json",
        "mm_textonly_predictions.json.gz",
    ]


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
