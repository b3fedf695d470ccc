"""One sweep spread over processes (``babymerge.sweep.workers``): torchrun ranks and --shard
processes into one folder give the results of a single process, cell for cell; a rank killed
mid-cell loses nothing a rerun cannot finish, no cell is recorded twice, and a cell whose claim
another process holds is left to it."""

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from babymerge.sweep import CELLS, sweep
from babymerge.sweep.workers import Worker, claim_path, current_worker, parse_shard, work_order

from conftest import REPO
from helpers.sweep import write_tasks

pytestmark = pytest.mark.slow  # each case starts 2-3 processes that import lm-eval

CHECKPOINTS = ["chck_1M", "chck_2M"]
ALPHAS = "0,0.5,1"


@pytest.fixture(scope="module")
def grid(toy, tmp_path_factory):
    """Two word-count checkpoint pairs (copies of the toy pair, chck_2M's multimodal weights
    perturbed so that the pairs score differently), one tiny local task."""
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("grid")
    for name in CHECKPOINTS:
        shutil.copytree(toy.mm, root / "mm" / name)
        shutil.copytree(toy.lang, root / "lang" / name)
    generator = torch.Generator().manual_seed(0)
    for weights in (root / "mm" / "chck_2M").glob("*.safetensors"):
        tensors = load_file(weights)
        tensors = {k: v + 0.5 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
                   for k, v in tensors.items()}  # fmt: skip
        save_file(tensors, weights, metadata={"format": "pt"})
    write_tasks(root)
    args = ["sweep", "--mm", str(root / "mm"), "--lang", str(root / "lang"), "--tasks", "mini_pairs",
            "--include-path", str(root / "tasks"), "--alphas", ALPHAS, "--no-progress"]  # fmt: skip
    reference = root / "one_process"
    run([sys.executable, "-m", "babymerge", *args, "--out", str(reference)])
    return args, reference


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def run(cmd, check=True):
    proc = subprocess.run(cmd, env=ENV, cwd=REPO, capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def recorded(out: Path) -> list[tuple[str, float]]:
    """Every cell line of cells.jsonl, duplicates included."""
    return [(c["checkpoint"], c["alpha"]) for c in map(json.loads, (out / "cells.jsonl").read_text().splitlines())]


def assert_same_as_one_process(out: Path, reference: Path) -> None:
    cells = sorted(recorded(out))
    assert cells == sorted((n, a) for n in CHECKPOINTS for a in (0.0, 0.5, 1.0))  # each once, none missing
    results = lambda p: {(c["checkpoint"], c["alpha"]): c["results"] for c in map(json.loads, open(p / "cells.jsonl"))}  # noqa: E731
    assert results(out) == results(reference)
    for report in ("results.csv", "results.jsonl"):
        assert (out / report).read_bytes() == (reference / report).read_bytes()
    # the cells do score differently: a cell recorded under another's name would show
    assert len({json.dumps(r, sort_keys=True) for r in results(reference).values()}) > 1


def test_two_torchrun_ranks_equal_one_process(grid, tmp_path):
    args, reference = grid
    out = tmp_path / "ranks"
    run([*TORCHRUN, "-m", "babymerge", *args, "--out", str(out)])
    assert_same_as_one_process(out, reference)


def test_two_shards_at_once_into_one_folder_equal_one_process(grid, tmp_path):
    args, reference = grid
    out = tmp_path / "shards"
    shards = [
        subprocess.Popen([sys.executable, "-m", "babymerge", *args, "--out", str(out), "--shard", f"{k}/2"],
                         env=ENV, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in range(2)
    ]  # fmt: skip
    for shard in shards:
        stdout, stderr = shard.communicate(timeout=900)
        assert shard.returncode == 0, stderr[-4000:]
    assert_same_as_one_process(out, reference)


def test_a_rank_killed_mid_cell_is_finished_by_a_rerun(grid, tmp_path):
    args, reference = grid
    out = tmp_path / "killed"
    marker = tmp_path / "rank1_in_a_cell"
    crashed = run([*TORCHRUN, "tests/sweep_kill.py", "--kill-rank", "1", "--marker", str(marker), *args,
                   "--out", str(out)], check=False)  # fmt: skip
    assert crashed.returncode != 0
    before = recorded(out) if (out / "cells.jsonl").exists() else []
    assert len(before) < 6 and len(set(before)) == len(before)  # rank 1's cell is not recorded
    run([sys.executable, "-m", "babymerge", *args, "--out", str(out)])
    assert recorded(out)[: len(before)] == before  # nothing recorded was redone
    assert_same_as_one_process(out, reference)


def test_shares_are_contiguous_blocks_then_the_others_from_the_end(monkeypatch):
    grid = list(range(7))
    assert work_order(grid, Worker(0, 2, 0, True)) == ([0, 1, 2, 3], [6, 5, 4])
    assert work_order(grid, Worker(1, 2, 1, True)) == ([4, 5, 6], [3, 2, 1, 0])
    assert work_order(grid, Worker(2, 3, 0, False)) == ([5, 6], [4, 3, 2, 1, 0])
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "1", "-1/2", "a/b"):
        with pytest.raises(Exception, match="--shard takes K/N"):
            parse_shard(bad)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert current_worker() == Worker(2 * 2 + 1, 6, 1, True)  # array task 2 of 3, rank 1 of 2 in it
    assert current_worker("0/1") == Worker(1, 2, 1, True)


def test_a_cell_another_process_holds_is_left_to_it(sweep_runs, tmp_path):
    """Sweeps with the same settings share a folder (ranks, shards): a cell whose claim another
    process holds is not computed again; once the holder dies, the OS frees the claim."""
    mm, lang, include = sweep_runs
    out = tmp_path / "sweep"
    run = dict(checkpoints="chck_1M,chck_2M", include_path=include, limit=3, progress=False)
    out.mkdir()
    (out / ".claims").mkdir()
    claim = claim_path(out, "chck_1M", 1.0)
    holder = subprocess.Popen(  # another process computing that cell, as a running sweep's worker does
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('locked', flush=True); time.sleep(60)", str(claim)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        cells = sweep(mm, lang, [0.0, 1.0], ["mini_pairs"], out, **run)
    finally:
        holder.kill()
        holder.wait()
    everyone = [("chck_1M", 0.0), ("chck_1M", 1.0), ("chck_2M", 0.0), ("chck_2M", 1.0)]
    assert sorted((c["checkpoint"], c["alpha"]) for c in cells) == [c for c in everyone if c != ("chck_1M", 1.0)]
    with open(claim, "a") as f:  # released by the OS when its holder died
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    cells = sweep(mm, lang, [0.0, 1.0], ["mini_pairs"], out, **run)
    lines = [json.loads(line) for line in (out / CELLS).read_text().splitlines()]
    assert [(c["checkpoint"], c["alpha"]) for c in lines][-1] == ("chck_1M", 1.0)  # only it was computed
    assert sorted((c["checkpoint"], c["alpha"]) for c in lines) == everyone
