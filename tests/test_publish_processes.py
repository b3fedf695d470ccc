"""Merge processes that are killed or race for one output (``babymerge.publish``): a killed merge
leaves no output, and its temporary is removed at once (SIGTERM) or by the next merge to the same
place (SIGKILL), never while its writer still runs; of two merges to one output one publishes a
complete checkpoint and the other fails in one line. The inputs are checksummed before and after.
"""

import json
import signal
import subprocess
import sys
import time

import pytest

from babymerge import merge
from demo.toy import build_toy_checkpoints

from helpers.files import RECIPE, checksums, leftovers


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """~64 MB of float32 per model: the merge takes long enough to be stopped mid-write."""
    return build_toy_checkpoints(tmp_path_factory.mktemp("big"), hidden_size=512, num_layers=6, seed=5)


def start_merge(big, out):
    cmd = [sys.executable, "-m", "babymerge", "merge", "--mm", str(big.mm), "--lang", str(big.lang), "--out", str(out),
           "--no-progress", "--max-shard-size", "8MB"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_mid_write(proc, parent):
    """Freeze the merge (SIGSTOP) once a shard is partly written; return its temporary directory."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        for tmp in parent.glob(".out.tmp-*"):
            shards = list(tmp.glob("model-*.safetensors"))
            if len(shards) >= 2:
                proc.send_signal(signal.SIGSTOP)
                return tmp
        time.sleep(0.001)
    raise AssertionError(f"the merge finished before it could be stopped: {proc.communicate()}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_merge_leaves_nothing_and_the_next_run_cleans_up(big, tmp_path, sig):
    """A merge killed mid-write leaves no --out: SIGTERM removes its `.out.tmp-*` at once, after
    SIGKILL the next merge to the same --out removes it; the inputs are unchanged."""
    before = checksums(big.mm, big.lang)
    out = tmp_path / "out"
    proc = start_merge(big, out)
    tmp = stop_mid_write(proc, tmp_path)
    assert not (tmp / "model.safetensors.index.json").exists()  # caught mid-way: the index comes last
    proc.send_signal(sig)
    proc.send_signal(signal.SIGCONT)
    proc.communicate(timeout=60)
    assert proc.returncode == (143 if sig == signal.SIGTERM else -signal.SIGKILL)
    assert not out.exists()
    if sig == signal.SIGTERM:  # cleaned up at once, like Ctrl-C
        assert leftovers(tmp_path) == []
    else:  # nothing runs after SIGKILL: the next merge to the same --out removes it
        assert leftovers(tmp_path) == [tmp.name]
        proc = start_merge(big, out)
        assert proc.wait(timeout=120) == 0 and leftovers(tmp_path) == []
        assert (out / RECIPE).is_file()
    assert checksums(big.mm, big.lang) == before


def test_two_merge_processes_to_one_out(big, tmp_path):
    """Two real `babymerge merge` processes started together: one publishes, the other fails in
    one line (whichever check catches it), the result is complete."""
    before = checksums(big.mm, big.lang)
    out = tmp_path / "out"
    procs = [start_merge(big, out) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read().strip().splitlines()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 2], results
    last = next(err[-1] for rc, err in results if rc == 2)
    assert "was created by another process while this one was writing" in last or "already exists" in last
    assert leftovers(tmp_path) == [] and checksums(big.mm, big.lang) == before
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert all((out / f).is_file() for f in set(index["weight_map"].values())) and (out / RECIPE).is_file()


def test_a_live_writers_temporary_is_never_removed(toy, tmp_path):
    """A merge removes the temporaries of writers that died on this host; one whose writer still
    runs, or whose owner it cannot know (another host, no owner in the name), stays."""
    import socket

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    names = {
        "live": f".out.tmp-{host}~{live.pid}-abcd1234",  # another merge still writing
        "dead": f".out.tmp-{host}~{dead.pid}-abcd1234",  # killed: removed
        "other_host": f".out.tmp-otherhost~{dead.pid}-abcd1234",  # a pid on another machine says nothing
        "no_owner": ".out.tmp-x8k2l0qz",  # no host~pid in the name: owner unknown, kept
    }
    try:
        for name in names.values():
            (tmp_path / name).mkdir()
            (tmp_path / name / "model.safetensors").write_bytes(b"partial")
        merge(toy.mm, toy.lang, out=tmp_path / "out", progress=False)
        assert leftovers(tmp_path) == sorted(names[k] for k in ("live", "other_host", "no_owner"))
    finally:
        live.kill()
        live.wait()
