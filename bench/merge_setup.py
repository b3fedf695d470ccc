"""What the merge benchmark (``bench/merge.py``) runs on: launching a child (``merge_children.py``)
with its wall time and peak RSS, the benchmark checkpoints (built once, cached), reading and hashing
their files, and mergekit in a venv of its own.

Standard library only: on Linux a child's ru_maxrss starts at its parent's RSS at fork/exec time,
so a parent that had imported torch would inflate every row.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

from merge_children import ALPHA, RESULT

REPO = Path(__file__).resolve().parents[1]
CHILD_SCRIPT = Path(__file__).resolve().parent / "merge_children.py"


def launch(cmd: list[str], log: Path, src: Path = REPO) -> dict:
    """Run cmd to completion (importing babymerge from ``src``); its wall time, peak RSS (wait4)
    and the RESULT it printed."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")])))
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join(text.splitlines()[-15:])
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited with {proc.returncode} (log: {log}):\n{tail}")
    result = next(
        (json.loads(line[len(RESULT) :]) for line in reversed(text.splitlines()) if line.startswith(RESULT)), {}
    )
    return {"process_s": elapsed, "peak_mb": usage.ru_maxrss / 1024, **result}


def child_command(role: str, spec: dict) -> list[str]:
    return [sys.executable, str(CHILD_SCRIPT), role, json.dumps(spec)]


def python_child(role: str, spec: dict, log: Path) -> dict:
    return launch(child_command(role, spec), log)


def safetensors_params_and_bytes(directory: Path) -> tuple[int, int]:
    """Parameter count and weight bytes from the safetensors headers (no torch needed)."""
    params = size = 0
    for file in Path(directory).glob("*.safetensors"):
        with open(file, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        params += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
        size += file.stat().st_size
    return params, size


def sha256_of_weights(directory: Path) -> str:
    """One sha256 over a checkpoint's safetensors files (sorted by name) and its shard index."""
    digest = hashlib.sha256()
    for file in sorted(Path(directory).glob("*.safetensors")) + sorted(
        Path(directory).glob("*.safetensors.index.json")
    ):
        digest.update(file.name.encode())
        with open(file, "rb", buffering=0) as f:
            while block := f.read(1 << 24):
                digest.update(block)
    return digest.hexdigest()


def warm_cache(*directories: Path) -> None:
    """Read every file once, so the next run starts from a warm page cache."""
    buf = bytearray(1 << 24)
    for file in sorted(f for d in directories for f in Path(d).rglob("*")):
        if file.is_file():
            with open(file, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass


def build_checkpoints(directory: Path, shape: dict, dtype: str, logs: Path) -> None:
    marker = directory / "built.json"
    wanted = {"shape": shape, "dtype": dtype}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return
    shutil.rmtree(directory, ignore_errors=True)
    print(f"building {dtype} checkpoints in {directory} ...", flush=True)
    start = time.perf_counter()
    python_child("build", {"dir": str(directory), "shape": shape, "dtype": dtype}, logs / f"build-{dtype}.log")
    marker.write_text(json.dumps(wanted))
    print(f"  built in {time.perf_counter() - start:.0f}s", flush=True)


# -- mergekit in its own venv ------------------------------------------------------------------
def mergekit_command(workdir: Path) -> Path | None:
    """``mergekit-yaml`` of this environment, else from workdir/mergekit-venv, installing it there
    once; None if impossible."""
    beside = Path(sys.executable).parent / "mergekit-yaml"  # the test extras install it in this environment
    if beside.is_file():
        return beside
    venv = workdir / "mergekit-venv"
    exe, py = venv / "bin" / "mergekit-yaml", venv / "bin" / "python"
    if exe.is_file():
        return exe
    # this environment's torch, without the local tag (2.13.0+cpu -> 2.13.0): the CPU wheel of
    # that version is available locally; never let pip resolve mergekit to another torch
    torch_version = importlib.metadata.version("torch").split("+")[0]
    constraints = workdir / "mergekit-constraints.txt"
    constraints.write_text(f"torch=={torch_version}\n")
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    print(f"installing mergekit into {venv} (once; torch=={torch_version} first) ...", flush=True)

    def step(cmd: list[str]) -> bool:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"  failed: {' '.join(cmd)}\n  " + "\n  ".join(done.stderr.strip().splitlines()[-5:]), flush=True)
        return done.returncode == 0

    shutil.rmtree(venv, ignore_errors=True)
    if not (step([sys.executable, "-m", "venv", str(venv)]) and step(pip + [f"torch=={torch_version}"])):
        return None
    if not step(pip + ["-c", str(constraints), "mergekit"]):
        # mergekit wants another torch: install it without dependencies, then the rest of them
        print("  retrying: mergekit --no-deps, then its other requirements with torch pinned", flush=True)
        if not step(pip + ["--no-deps", "mergekit"]):
            return None
        code = "import importlib.metadata as m; print('\\n'.join(m.requires('mergekit') or []))"
        requires = subprocess.run([str(py), "-c", code], capture_output=True, text=True).stdout.splitlines()
        others = [r for r in requires if "extra ==" not in r and not r.replace(" ", "").lower().startswith("torch")]
        if others and not step(pip + ["-c", str(constraints), *others]):
            return None
    return exe if exe.is_file() else None


def mergekit_yaml(path: Path, first: Path, second: Path, dtype: str) -> Path:
    """The config ``babymerge merge --mergekit-yaml`` exports for linear: weights 1 - alpha, alpha."""
    path.write_text(
        "merge_method: linear\n"
        "models:\n"
        f"  - model: {first}\n    parameters: {{weight: {1 - ALPHA}}}\n"
        f"  - model: {second}\n    parameters: {{weight: {ALPHA}}}\n"
        "parameters: {normalize: false}\n"
        f"dtype: {dtype}\n"
    )
    return path
