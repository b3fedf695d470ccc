"""A merge never destroys or half-writes anything, and every mistake is one actionable line.

Checkpoints that a test could destroy are copies; inputs are checksummed before and after.
"""

import hashlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import babymerge.publish as publish
from babymerge import BabyMergeError, merge
from babymerge.checkpoint import Checkpoint
from babymerge.cli import main
from demo.toy import build_toy_checkpoints, toy_text_config

from conftest import REPO

RECIPE = "babymerge_recipe.json"
merge_write = importlib.import_module("babymerge.merge.write")  # `babymerge.merge` is the function


def checksums(*dirs):
    """sha256 of every file under the directories (names relative to each)."""
    return {
        (str(d), str(f.relative_to(d))): hashlib.sha256(f.read_bytes()).hexdigest()
        for d in dirs
        for f in sorted(Path(d).rglob("*"))
        if f.is_file()
    }


def leftovers(folder, name="out"):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith(f".{name}."))


@pytest.fixture
def runs(toy, tmp_path):
    """runs/mm and runs/lang: copies of the toy pair laid out like training runs (with
    trainer_state.json and deepspeed/, which a merge output never has)."""
    runs = tmp_path / "runs"
    for name, src in (("mm", toy.mm), ("lang", toy.lang)):
        shutil.copytree(src, runs / name)
        (runs / name / "trainer_state.json").write_text('{"words_seen": 1000}')
        (runs / name / "deepspeed").mkdir()
        (runs / name / "deepspeed" / "optim_states.pt").write_bytes(b"state")
    return runs


def cli(capsys, *argv):
    rc = main(["merge", *map(str, argv), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err[-1] if err else ""


# -- 1. --out is never an input --------------------------------------------------------------------
@pytest.mark.parametrize(
    "out, flag, how",
    [
        ("runs/mm", "--overwrite", "is the input"),  # the training checkpoint stays
        ("runs/mm", "--overwrite-any", "is the input"),
        ("runs", "--overwrite-any", "contains the input"),  # both runs stay
        ("runs/lang/merged", None, "lies inside the input"),  # nothing written into the checkpoint
    ],
)
def test_out_that_is_contains_or_lies_inside_an_input_is_refused(runs, tmp_path, capsys, out, flag, how):
    before = checksums(runs)
    rc, last = cli(
        capsys, "--mm", runs / "mm", "--lang", runs / "lang", "--out", tmp_path / out, *([flag] if flag else [])
    )
    assert rc == 2 and last.startswith("babymerge: error: output directory") and how in last
    assert "would destroy that input" in last
    assert checksums(runs) == before and not (runs / "lang" / "merged").exists()


def test_base_is_protected_too(toy, runs, capsys):
    base = runs / "base"
    shutil.copytree(toy.base, base)
    before = checksums(base)
    rc, last = cli(
        capsys,
        "--mm",
        runs / "mm",
        "--lang",
        runs / "lang",
        "--base",
        base,
        "--method",
        "ties",
        "--out",
        base,
        "--overwrite-any",
    )
    assert rc == 2 and "is the input" in last and checksums(base) == before


def test_mergekit_yaml_is_never_written_into_an_input(runs, capsys):
    """`--mergekit-yaml runs/mm/config.json`: refused in one line, exit 2, the checkpoint unchanged."""
    before = checksums(runs)
    rc, last = cli(capsys, "--mm", runs / "mm", "--lang", runs / "lang", "--mergekit-yaml", runs / "mm" / "config.json")
    assert rc == 2 and "--mergekit-yaml" in last and "lies inside the input" in last and checksums(runs) == before


def test_overwrite_replaces_only_an_earlier_merge(runs, tmp_path, capsys):
    """--overwrite refuses a directory babymerge did not write (someone's notes); --overwrite-any replaces it."""
    out = tmp_path / "notes"
    out.mkdir()
    (out / "todo.txt").write_text("mine")
    rc, last = cli(capsys, "--mm", runs / "mm", "--lang", runs / "lang", "--out", out, "--overwrite")
    assert (
        rc == 2
        and "was not written by babymerge (it has no babymerge_recipe.json)" in last
        and "--overwrite-any" in last
    )
    assert (out / "todo.txt").read_text() == "mine"
    assert cli(capsys, "--mm", runs / "mm", "--lang", runs / "lang", "--out", out, "--overwrite-any")[0] == 0
    assert (out / RECIPE).is_file() and not (out / "todo.txt").exists()
    assert (
        cli(capsys, "--mm", runs / "mm", "--lang", runs / "lang", "--out", out, "--overwrite", "--alpha", "0.6")[0] == 0
    )
    assert json.loads((out / RECIPE).read_text())["alpha"] == 0.6 and leftovers(tmp_path, "notes") == []


# -- 2. publishing is atomic and exclusive ---------------------------------------------------------
def during_merge(monkeypatch, action):
    """Run ``action`` after the merge has written everything, just before it publishes."""
    original = merge_write.write_recipe

    def write_recipe(*args, **kwargs):
        original(*args, **kwargs)
        action()

    monkeypatch.setattr(merge_write, "write_recipe", write_recipe)


@pytest.mark.parametrize("content", ["empty", "file"])
def test_a_directory_created_meanwhile_survives(toy, tmp_path, monkeypatch, content):
    """A directory created at --out while the merge writes (empty or not) is kept as it is, with
    or without --overwrite: the merge fails in one line and leaves nothing behind."""
    out = tmp_path / "out"

    def someone_else():
        out.mkdir()
        if content == "file":
            (out / "theirs.txt").write_text("theirs")

    during_merge(monkeypatch, someone_else)
    for overwrite in (False, True):  # --overwrite checked a directory that did not exist then
        with pytest.raises(BabyMergeError, match="was created by another process while this one was writing"):
            merge(toy.mm, toy.lang, out=out, overwrite=overwrite, progress=False)
        assert sorted(p.name for p in out.iterdir()) == ([] if content == "empty" else ["theirs.txt"])
        assert leftovers(tmp_path) == []
        shutil.rmtree(out)


def test_two_merges_to_one_out_one_wins_the_other_fails(toy, tmp_path, monkeypatch):
    """The second merge starts and finishes while the first is writing: the first fails in one
    line and the second's complete result stays."""
    out = tmp_path / "out"
    during_merge(monkeypatch, lambda: (monkeypatch.undo(), merge(toy.mm, toy.lang, alpha=0.7, out=out, progress=False)))
    with pytest.raises(BabyMergeError, match="was created by another process"):
        merge(toy.mm, toy.lang, alpha=0.2, out=out, progress=False)
    assert json.loads((out / RECIPE).read_text())["alpha"] == 0.7 and leftovers(tmp_path) == []
    expected = merge(toy.mm, toy.lang, alpha=0.7, progress=False).model.state_dict()
    assert all(torch.equal(expected[k], v) for k, v in load_file(out / "model.safetensors").items())


def test_overwrite_replaces_only_the_directory_it_checked(toy, tmp_path, monkeypatch):
    """Two --overwrite merges at once: the one that finishes second fails and does not replace
    the first one's fresh result."""
    out = tmp_path / "out"
    merge(toy.mm, toy.lang, alpha=0.1, out=out, progress=False)
    during_merge(
        monkeypatch,
        lambda: (monkeypatch.undo(), merge(toy.mm, toy.lang, alpha=0.7, out=out, overwrite=True, progress=False)),
    )
    with pytest.raises(BabyMergeError, match="was replaced or removed by another process"):
        merge(toy.mm, toy.lang, alpha=0.2, out=out, overwrite=True, progress=False)
    assert json.loads((out / RECIPE).read_text())["alpha"] == 0.7 and leftovers(tmp_path) == []


def test_exclusive_rename_never_replaces_an_empty_directory(tmp_path, monkeypatch):
    """Both paths of publish_exclusive: renameat2(RENAME_NOREPLACE) and the mkdir-claim fallback."""
    for fallback in (False, True):
        if fallback:
            monkeypatch.setattr(publish, "_renameat2", lambda *a: False)
        src, dst = tmp_path / f"src{fallback}", tmp_path / f"dst{fallback}"
        src.mkdir()
        (src / "a").write_text("a")
        dst.mkdir()
        with pytest.raises(FileExistsError):
            publish.publish_exclusive(src, dst)
        assert list(dst.iterdir()) == [] and (src / "a").is_file()
        dst.rmdir()
        publish.publish_exclusive(src, dst)
        assert (dst / "a").read_text() == "a" and not src.exists()


# -- 3. killed merges --------------------------------------------------------------------------------
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
    import socket

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    names = {
        "live": f".out.tmp-{host}~{live.pid}-abcd1234",  # another merge still writing
        "dead": f".out.tmp-{host}~{dead.pid}-abcd1234",  # killed: removed
        "other_host": f".out.tmp-otherhost~{dead.pid}-abcd1234",  # a pid on another machine says nothing
        "old_style": ".out.tmp-x8k2l0qz",  # from an older babymerge: owner unknown
    }
    try:
        for name in names.values():
            (tmp_path / name).mkdir()
            (tmp_path / name / "model.safetensors").write_bytes(b"partial")
        merge(toy.mm, toy.lang, out=tmp_path / "out", progress=False)
        assert leftovers(tmp_path) == sorted(names[k] for k in ("live", "other_host", "old_style"))
    finally:
        live.kill()
        live.wait()


# -- Errors a person can act on ----------------------------------------------------------------
def unshare_available():
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0
    except OSError:
        return False


needs_unshare = pytest.mark.skipif(not unshare_available(), reason="needs `unshare -rm` (user and mount namespaces)")


def in_small_filesystem(script, mnt, size="64k"):
    """Run ``script`` (bash) in a private mount namespace where ``mnt`` is a tmpfs of ``size``."""
    mnt.mkdir()
    full = f"set -u; mount -t tmpfs -o size={size} tmpfs {mnt}; {script}"
    return subprocess.run(["unshare", "-rm", "bash", "-c", full], capture_output=True, text=True)


@needs_unshare
def test_full_disk(toy, tmp_path):
    """A real ENOSPC (a 64 KiB tmpfs): one line "no space left on the device", exit 2, nothing left."""
    mnt = tmp_path / "mnt"
    babymerge = f"{sys.executable} -m babymerge merge --mm {toy.mm} --lang {toy.lang} --no-progress"
    result = in_small_filesystem(f"{babymerge} --out {mnt}/out; echo rc=$?; ls -A {mnt}", mnt)
    assert "rc=2" in result.stdout and result.stdout.split("rc=2")[1].split() == [], result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("babymerge: error: no space left on the device")


@needs_unshare
def test_read_only_disk_keeps_the_old_output_and_leaves_no_old_dir(toy, tmp_path):
    """A read-only disk: one line naming it, exit 2; with --overwrite the old output stays and no
    `..old-*` directory is left."""
    mnt = tmp_path / "mnt"
    babymerge = f"{sys.executable} -m babymerge merge --mm {toy.mm} --lang {toy.lang} --no-progress"
    script = (
        f"{babymerge} --out {mnt}/out >/dev/null && mount -o remount,ro {mnt} && "
        f"{babymerge} --out {mnt}/out --overwrite; echo rc=$?; {babymerge} --out {mnt}/new; echo rc=$?; ls -A {mnt}"
    )
    result = in_small_filesystem(script, mnt, size="16m")
    assert result.stdout.split() == ["rc=2", "rc=2", "out"], result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("babymerge: error:")]
    assert len(errors) == 2 and all("the file system is read-only; choose another --out" in e for e in errors)


@needs_unshare
@pytest.mark.parametrize("name", ["recipe.yml", "sub/recipe.yml"])
def test_mergekit_yaml_on_a_read_only_disk(toy_same_class, tmp_path, name):
    """--mergekit-yaml on a read-only disk: one line naming the file, exit 2, nothing written.
    (mergekit needs a twin of the same class.)"""
    mnt, toy = tmp_path / "mnt", toy_same_class
    babymerge = f"{sys.executable} -m babymerge merge --mm {toy.mm} --lang {toy.lang} --no-progress"
    script = f"mount -o remount,ro {mnt} && {babymerge} --mergekit-yaml {mnt}/{name}; echo rc=$?; ls -A {mnt}"
    result = in_small_filesystem(script, mnt)
    assert result.stdout.split() == ["rc=2"], result.stdout + result.stderr  # and nothing in mnt
    assert result.stderr.strip().splitlines() == [
        f"babymerge: error: cannot write output '{mnt}/{name}': the file system is read-only; choose another --mergekit-yaml"
    ]


@pytest.mark.parametrize("out", [".", "..", "{work}"])
def test_out_may_not_be_the_current_directory_or_contain_it(toy, tmp_path, out):
    """--out that is or contains the current directory, even with --overwrite-any: one line, exit 2,
    nothing touched."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    command = [
        sys.executable,
        "-m",
        "babymerge",
        "merge",
        "--mm",
        str(toy.mm),
        "--lang",
        str(toy.lang),
        "--no-progress",
    ]
    result = subprocess.run(
        [*command, "--out", out.format(work=work), "--overwrite-any"], cwd=work, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"babymerge: error: output directory {out.format(work=work)!r} is the current directory or contains it: "
        "the output replaces --out as a whole; choose a new directory, e.g. --out merged"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"] and os.listdir(work) == ["notes.txt"]


@pytest.mark.parametrize(
    "args, match",
    [
        # a file on the path to --out
        (["--out", "{tmp}/file.txt/out"], r"'.*file.txt' is a file, not a directory; choose another --out"),
        # checked before either checkpoint is read
        (
            ["--out", "{tmp}/out", "--max-shard-size", "abc"],
            r"--max-shard-size must be a positive size such as 500MB.*got 'abc'",
        ),
        (["--out", "{tmp}/out", "--max-shard-size", "0"], r"--max-shard-size must be a positive size"),
        # a method option of the wrong type
        (
            ["--out", "{tmp}/out", "--method", "ties", "--density", "abc"],
            r"option density of merge method 'ties' must be a number .*got 'abc'",
        ),
        (
            ["--out", "{tmp}/out", "--method", "ties_peft", "--majority-sign-method", "total", "--scale", "x"],
            r"option scale of merge method 'ties_peft' must be a number",
        ),
        (
            ["--out", "{tmp}/out", "--method", "dare_linear", "--seed", "1.5"],
            r"option seed of merge method 'dare_linear' must be an integer",
        ),
    ],
)
def test_bad_merge_arguments_are_one_line(toy, tmp_path, capsys, args, match):
    import re

    (tmp_path / "file.txt").write_text("x")
    rc, last = cli(capsys, "--mm", toy.mm, "--lang", toy.lang, *[a.format(tmp=tmp_path) for a in args])
    assert rc == 2 and re.search(match, last) and last.startswith("babymerge: error: "), last
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_a_twin_without_tokenizer_files_is_warned_about(toy, tmp_path, capsys):
    """A language-only checkpoint without tokenizer files: merged, with a warning that the tokenizers
    cannot be compared."""
    lang = tmp_path / "lang"
    shutil.copytree(toy.lang, lang)
    for f in lang.glob("tokenizer*"):
        f.unlink()
    (lang / "special_tokens_map.json").unlink(missing_ok=True)
    rc = main(["merge", "--mm", str(toy.mm), "--lang", str(lang), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0
    assert f"babymerge: warning: the language-only checkpoint '{lang}' has no tokenizer files: cannot check" in err


def test_mm_equal_to_lang_is_warned_about(toy, tmp_path, capsys):
    """--mm and --lang the same checkpoint: merged, with a warning (every alpha gives the same model)."""
    rc = main(["merge", "--mm", str(toy.mm), "--lang", str(toy.mm), "--out", str(tmp_path / "out"), "--no-progress"])
    assert rc == 0 and "babymerge: warning: --mm and --lang are the same checkpoint" in capsys.readouterr().err


def test_swapped_mm_and_lang_are_refused(toy, tmp_path, capsys):
    """A plain Llama as --mm and BabyLLaVA as --lang: one line asking whether they were swapped,
    exit 2, nothing written."""
    rc, last = cli(capsys, "--mm", toy.lang, "--lang", toy.mm, "--out", tmp_path / "out")
    assert rc == 2 and "is a text-only LlamaForCausalLM but --lang" in last and "Did you swap --mm and --lang?" in last
    assert "multi_modal_projector" in last or "projector" in last
    assert not (tmp_path / "out").exists()


def test_outputs_get_the_users_umask(toy, tmp_path):
    """Outputs get the user's umask (0755 directories, 0644 files), not mkdtemp's 0700 or mkstemp's 0600."""
    old = os.umask(0o022)
    try:
        out = merge(toy.mm, toy.lang, out=tmp_path / "out", progress=False).out
        written = publish.write_file_atomic(tmp_path / "sub" / "results.csv", "a,b\n")
        with publish.atomic_output_dir(tmp_path / "other") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o755 and (tmp_path / "other").stat().st_mode & 0o777 == 0o755
    for f in [out / "model.safetensors", out / RECIPE, out / "config.json", written]:
        assert f.stat().st_mode & 0o777 == 0o644, f


# -- tied embeddings in memory, the re-merger's memory, one dtype parser ------------------------------
def tied_pair(root, kind, tokenizer):
    """Two random models with tied input/output embeddings, saved with one tokenizer."""
    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        if kind == "gpt2":
            model = GPT2LMHeadModel(
                GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64)
            )
        else:
            config = {k: v for k, v in toy_text_config(len(tokenizer), hidden_size=32).items() if k != "model_type"}
            model = LlamaForCausalLM(LlamaConfig(**config, tie_word_embeddings=True))
        model.save_pretrained(root / f"{kind}{seed}")
        tokenizer.save_pretrained(root / f"{kind}{seed}")
        paths.append(root / f"{kind}{seed}")
    return paths


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_tied_embedding_pairs_merge_in_memory_and_to_disk(toy, tmp_path, kind):
    """Pairs with tied input/output embeddings (GPT-2, Llama) merge in memory, to disk and through the
    re-merger, equal to a hand computation, the output embeddings still tied."""
    a, b = tied_pair(tmp_path, kind, AutoTokenizer.from_pretrained(toy.mm))
    sa, sb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert "lm_head.weight" not in sa  # saved tied
    model = merge(a, b, alpha=0.3, progress=False).model
    state = model.state_dict()
    for name in sa:  # against a hand computation
        torch.testing.assert_close(state[name], 0.7 * sa[name] + 0.3 * sb[name], rtol=0, atol=1e-6)
    embed = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight.data_ptr() == embed.data_ptr()
    out = merge(a, b, alpha=0.3, out=tmp_path / "merged", progress=False).out
    loaded = type(model).from_pretrained(out)
    ids = torch.tensor([[3, 5, 7, 11]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=1e-5)
    remerge = merge(a, b, alpha=0.3, keep_sources=True, progress=False).remerge  # sweeps use it too
    remerge.set_alpha(0.6)
    torch.testing.assert_close(remerge.model.get_output_embeddings().weight, 0.4 * sa[next(k for k in sa if "wte" in k or "embed" in k)]
                               + 0.6 * sb[next(k for k in sb if "wte" in k or "embed" in k)], rtol=0, atol=1e-6)  # fmt: skip


def test_remerger_keeps_no_copy_of_the_sources_and_equals_a_fresh_merge(toy):
    """The re-merger holds no tensor copies of the sources (it reads the checkpoints again for each
    alpha), and each alpha equals a fresh merge."""
    remerge = merge(toy.mm, toy.lang, alpha=0.3, keep_sources=True, progress=False).remerge
    with_base = merge(
        toy.mm, toy.lang, "task_arithmetic", 0.3, base_ckpt=toy.base, keep_sources=True, progress=False
    ).remerge
    for r in (remerge, with_base):
        assert not any(isinstance(v, torch.Tensor) for v in vars(r).values())
        assert all(isinstance(c, (Checkpoint, type(None))) for c in r.sources)
    for r, kwargs in ((remerge, {}), (with_base, {"method": "task_arithmetic", "base_ckpt": toy.base})):
        fresh = merge(toy.mm, toy.lang, alpha=0.5, progress=False, **kwargs).model.state_dict()
        r.set_alpha(0.5)
        assert all(torch.equal(fresh[k], v) for k, v in r.model.state_dict().items())


def test_one_dtype_parser(toy):
    """dtype=bf16 is understood with and without lang_ckpt; an unknown dtype is one error."""
    from babymerge.lm_eval_model import BabyMergeLM

    lm = BabyMergeLM(pretrained=str(toy.lang), dtype="bf16", image_prefix="none", device="cpu")
    assert lm.model.dtype == torch.bfloat16
    merged = BabyMergeLM(pretrained=str(toy.mm), lang_ckpt=str(toy.lang), dtype="bf16", device="cpu")
    assert merged.model.dtype == torch.bfloat16
    with pytest.raises(BabyMergeError, match="unknown dtype 'int8'"):
        BabyMergeLM(pretrained=str(toy.lang), dtype="int8", image_prefix="none", device="cpu")


# -- lm-eval adapter ---------------------------------------------------------------------------------
def test_lm_eval_checkpoint_paths_that_do_not_exist(toy, tmp_path):
    """A checkpoint path that does not exist: one BabyMergeError naming it, not a hub client error."""
    from babymerge.lm_eval_model import BabyMergeLM

    missing = tmp_path / "runs" / "mm" / "ckpt-ep10"
    with pytest.raises(BabyMergeError, match=rf"^pretrained='{missing}' does not exist; give the checkpoint directory"):
        BabyMergeLM(pretrained=str(missing), device="cpu")
    with pytest.raises(BabyMergeError, match=r"^lang_ckpt='.*nope' does not exist"):
        BabyMergeLM(pretrained=str(toy.mm), lang_ckpt=str(tmp_path / "nope"), device="cpu")


def test_lm_eval_cli_ends_with_our_message(tmp_path):
    """The traceback above is lm-eval's; the last line must be ours and say it all."""
    missing = tmp_path / "runs" / "mm"
    cmd = ["lm_eval", "--model", "babymerge", "--model_args", f"pretrained={missing}", "--tasks", "blimp_anaphor_gender_agreement",
           "--include_path", str(REPO / "lm_eval_tasks"), "--device", "cpu"]  # fmt: skip
    result = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"babymerge.errors.BabyMergeError: pretrained='{missing}' does not exist; give the checkpoint directory (written by save_pretrained)"
    )


def test_lm_eval_batch_size_model_arg_wins_over_the_cli_default(toy):
    """batch_size in --model_args wins over the one the lm_eval CLI always passes."""
    from babymerge.lm_eval_model import BabyMergeLM

    cli_config = {"batch_size": 1, "max_batch_size": None, "device": "cpu"}
    lm = BabyMergeLM.create_from_arg_string(f"pretrained={toy.lang},image_prefix=none,batch_size=4", cli_config)
    assert lm.batch_size == 4 and lm.device.type == "cpu"
    assert BabyMergeLM.create_from_arg_string(f"pretrained={toy.lang},image_prefix=none", cli_config).batch_size == 1
    lm = BabyMergeLM.create_from_arg_obj(
        {"pretrained": str(toy.lang), "image_prefix": "none", "batch_size": "auto"}, cli_config
    )
    assert lm.batch_size == "auto"


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"image_prefix": "white"}, "image_prefix must be one of"),
        ({"dtype": "int8"}, "unknown dtype 'int8'"),
        ({"batch_size": "many"}, "batch_size must be an integer or 'auto'"),
    ],
)
def test_lm_eval_arguments_are_checked_before_the_merge(toy, monkeypatch, extra, match):
    import babymerge.lm_eval_model as adapter

    def no_merge(*args, **kwargs):
        raise AssertionError("merged before checking the arguments")

    monkeypatch.setattr(adapter, "merge", no_merge)
    with pytest.raises(BabyMergeError, match=match):
        adapter.BabyMergeLM(pretrained=str(toy.mm), lang_ckpt=str(toy.lang), device="cpu", **extra)


def test_lm_eval_image_prefix_black_on_a_text_model_is_refused_before_the_merge(toy, monkeypatch):
    import babymerge.lm_eval_model as adapter

    monkeypatch.setattr(adapter, "merge", lambda *a, **k: (_ for _ in ()).throw(AssertionError("merged first")))
    with pytest.raises(BabyMergeError, match="image_prefix=black needs a BabyLLaVA checkpoint"):
        adapter.BabyMergeLM(pretrained=str(toy.lang), lang_ckpt=str(toy.lang), image_prefix="black", device="cpu")


def test_use_cache_keeps_what_an_interrupted_run_scored(toy, tmp_path):
    """lm-eval's --use_cache (CachingLM) stores results only when a whole loglikelihood call
    returns; lm-eval's `hf` model also adds each result as it is computed (cache_hook.add_partial),
    so a crashed or killed run keeps its progress: the adapter does too, so the interrupted run
    below leaves what it scored in the cache."""
    from lm_eval.api.model import CachingLM

    from babymerge.lm_eval_model import BabyMergeLM

    from conftest import requests

    sentences = [f"The {w} sees a cat." for w in ("dog", "girl", "boy", "teacher", "bird", "tree")]
    args = dict(pretrained=str(toy.lang), image_prefix="none", device="cpu", batch_size=1, prefix_sharing=False)
    expected = BabyMergeLM(**args).loglikelihood(requests(sentences))

    lm = BabyMergeLM(**args)
    forward, calls = lm._hidden_states, []

    def crash_on_third_batch(rows):
        calls.append(len(rows))
        if len(calls) == 3:
            raise RuntimeError("killed")
        return forward(rows)

    lm._hidden_states = crash_on_third_batch
    db = str(tmp_path / "cache.db")
    with pytest.raises(RuntimeError, match="killed"):
        CachingLM(lm, db).loglikelihood(requests(sentences))

    lm2 = BabyMergeLM(**args)
    scored = []
    original = lm2._loglikelihood_tokens
    lm2._loglikelihood_tokens = lambda reqs, **kw: (scored.append(len(reqs)), original(reqs, **kw))[1]
    assert CachingLM(lm2, db).loglikelihood(requests(sentences)) == expected
    assert scored == [len(sentences) - 2]  # the two requests scored before the crash came from the cache
    scored.clear()
    assert CachingLM(lm2, db).loglikelihood(requests(sentences)) == expected and scored == []  # all cached now
