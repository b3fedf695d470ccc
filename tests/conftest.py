"""Shared fixtures: tiny random checkpoints built locally (no hub, no downloads), and where test data lives.

Evaluation data for the tests is read from ONE folder, ``$BABYMERGE_TEST_DATA`` (default
``../shared/data``, beside the checkout), laid out like the BabyLM pipeline's
``evaluation_data/`` (``blimp/`` holds the official BLiMP files). Only this file reads the
variable. A test that needs a subfolder is marked ``@needs_data("blimp")`` (``needs_blimp``):
without the folder it is skipped on a workstation and is an ERROR in CI (``CI=true``), so a
CI run never passes by skipping. What can run without the data uses small fixtures written by
the tests themselves.
"""

import contextlib
import importlib.util
import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from lm_eval.api.instance import Instance

from demo.toy import TOY_BLIMP_UID, build_random_llama, build_toy_checkpoints, determiner_noun_pairs

from helpers.models import LARGE_CONFIG

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = Path(os.environ.get("BABYMERGE_TEST_DATA") or REPO.parent / "shared" / "data").resolve()
BLIMP = TEST_DATA / "blimp"  # the official BLiMP files, read in place (never copied into the project)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# The official BabyLM 2025 evaluation pipeline, unmodified, run only as a subprocess with its
# folder on PYTHONPATH (../shared/third_party/SOURCE.md): ``$BABYMERGE_TEST_PIPELINE``, default
# beside the checkout. Tests that run it are marked ``@needs_pipeline`` (skipped without it, an
# error in CI, like ``needs_data``).
PIPELINE = Path(
    os.environ.get("BABYMERGE_TEST_PIPELINE")
    or REPO.parent / "shared" / "third_party" / "babylm-evaluation-pipeline-2025"
).resolve()


def needs_data(name: str):
    """Mark a test that reads ``$BABYMERGE_TEST_DATA/<name>``."""
    return pytest.mark.needs_data(name)


needs_blimp = needs_data("blimp")
needs_pipeline = pytest.mark.needs_pipeline


def pytest_runtest_setup(item):
    missing = [
        f"{TEST_DATA / m.args[0]} does not exist: set BABYMERGE_TEST_DATA to the folder that holds {m.args[0]}/"
        for m in item.iter_markers("needs_data")
        if not (TEST_DATA / m.args[0]).is_dir()
    ]
    if item.get_closest_marker("needs_pipeline") and not (PIPELINE / "evaluation_pipeline").is_dir():
        missing.append(f"the official 2025 pipeline is not at {PIPELINE}: set BABYMERGE_TEST_PIPELINE")
    if missing:
        if IN_CI:
            pytest.fail(f"{missing[0]} (CI=true: missing test data is an error, not a skip)", pytrace=False)
        pytest.skip(missing[0])


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False):
    """A small RAM file system at ``path`` (a real full or read-only disk); skips without mount rights."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def blimp_rows(paradigm="anaphor_gender_agreement", n=12) -> tuple[str, list[dict]]:
    """(UID, the first ``n`` rows) of an official BLiMP file. Without the data: ``n`` different
    made-up minimal pairs of the toy grammar in the same fields (determiner-noun agreement), so
    the tests that need no real items run, each pair distinct."""
    if BLIMP.is_dir():
        return paradigm, [json.loads(line) for line in (BLIMP / f"{paradigm}.jsonl").read_text().splitlines()[:n]]
    rows = determiner_noun_pairs(n)
    assert len(rows) == n and len({(r["sentence_good"], r["sentence_bad"]) for r in rows}) == n
    return TOY_BLIMP_UID, rows


def blimp_sentences(paradigm="anaphor_gender_agreement", n=12) -> list[str]:
    """Good and bad sentence of each of ``blimp_rows(paradigm, n)``, in turn."""
    return [s for row in blimp_rows(paradigm, n)[1] for s in (row["sentence_good"], row["sentence_bad"])]


def requests(sentences, visual=None):
    extra = ({"visual": visual},) if visual is not None else ()
    return [Instance("loglikelihood", {}, ("", " " + s, *extra), i) for i, s in enumerate(sentences)]


@pytest.fixture(scope="session")
def toy(tmp_path_factory):
    """Multimodal model + LlamaForCausalLM twin + shared base, one tokenizer, tiny DINOv2."""
    return build_toy_checkpoints(tmp_path_factory.mktemp("toy"), with_base=True)


@pytest.fixture(scope="session")
def toy_same_class(tmp_path_factory):
    """Multimodal model + a language-only twin of the same BabyLLaVA class."""
    return build_toy_checkpoints(tmp_path_factory.mktemp("toy_same"), lang_class="babyllava", seed=10)


@pytest.fixture(scope="session")
def large_pair(tmp_path_factory):
    """Two random ``LlamaForCausalLM`` of ``helpers.models.LARGE_CONFIG`` (252 MB each in float32),
    seeds 0 and 1: (multimodal, language-only) for merges that take long enough to be stopped,
    or that meet a memory limit."""
    root = tmp_path_factory.mktemp("large_pair")
    return build_random_llama(root / "mm", LARGE_CONFIG, seed=0), build_random_llama(
        root / "lang", LARGE_CONFIG, seed=1
    )


@pytest.fixture(scope="module")
def merged(toy, tmp_path_factory):
    """``toy.mm`` merged with ``toy.lang`` at alpha 0.3, written to disk (a self-contained checkpoint)."""
    from babymerge import merge

    out = tmp_path_factory.mktemp("merged") / "merged-a0.3"
    merge(str(toy.mm), str(toy.lang), alpha=0.3, out=str(out))
    return out


@pytest.fixture(scope="session")
def sweep_runs(toy, tmp_path_factory):
    """(multimodal run, language-only run, include path): runs of ``helpers.sweep.WORD_CHECKPOINTS``
    and ``ckpt-ep1``, each a copy of the toy pair, and the ``mini_pairs`` task. Read-only: tests
    sweep them into their own folders."""
    from helpers.sweep import fake_run, write_tasks

    root = tmp_path_factory.mktemp("word_runs")
    return fake_run(root / "mm", toy.mm, 0), fake_run(root / "lang", toy.lang, 1), [str(write_tasks(root))]


@pytest.fixture(scope="session")
def swept(sweep_runs, tmp_path_factory):
    """One sweep of ``sweep_runs`` over the three word-count checkpoints and two alphas: (out, cells).
    Shared by the store's and the plots' tests (one sweep per test worker), which only read it."""
    from babymerge.sweep import sweep

    mm, lang, include = sweep_runs
    out = tmp_path_factory.mktemp("swept") / "sweep"
    cells = sweep(
        mm, lang, [0.0, 1.0], ["mini_pairs"], out, checkpoints="words", include_path=include, limit=3, progress=False
    )
    return out, cells


@pytest.fixture(scope="module")
def sweep_include(tmp_path_factory):
    """Include path of the project's tasks and ``mini_pairs`` over ``helpers.sweep.PAIRS``, with
    the synthetic Winoground in ``$BABYMERGE_DATA``."""
    from babymerge.data.synthetic_winoground import write_dataset

    from helpers.sweep import PAIRS

    root = tmp_path_factory.mktemp("sweep")
    data = root / "data"
    write_dataset(data / "winoground", n=4, seed=2)
    write_pairs_task(root, PAIRS)
    include = [str(REPO / "lm_eval_tasks"), str(root / "tasks")]
    with pytest.MonkeyPatch.context() as mp:  # a module fixture: monkeypatch itself is per test
        mp.setenv("BABYMERGE_DATA", str(data))
        yield include


def word_count_runs(root: Path, names) -> Path:
    """``root/mm`` and ``root/lang``, training runs with one word-count checkpoint per name
    (symlinks to toy pairs of different seeds, one tokenizer for all)."""
    from babymerge.tokenization import train_bpe_tokenizer
    from demo.toy import synthetic_sentences

    tokenizer = train_bpe_tokenizer(synthetic_sentences(2000), vocab_size=300)
    for k, name in enumerate(names):
        toy = build_toy_checkpoints(root / f"toy{k}", seed=k, tokenizer=tokenizer)
        for run, path in (("mm", toy.mm), ("lang", toy.lang)):
            (root / run).mkdir(exist_ok=True)
            (root / run / name).symlink_to(path)
    return root


def write_pairs_task(root: Path, pairs) -> Path:
    """``mini_pairs``: a tiny lm-eval task over minimal pairs in a local JSON file (BLiMP's
    fields), written to ``root/tasks`` (returned) with its data in ``root/pairs.jsonl``."""
    (root / "tasks").mkdir(parents=True)
    data = root / "pairs.jsonl"
    data.write_text("".join(json.dumps({"sentence_good": g, "sentence_bad": b}) + "\n" for g, b in pairs))
    (root / "tasks" / "mini_pairs.yaml").write_text(
        textwrap.dedent(f"""\
        task: mini_pairs
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {data}
        test_split: test
        output_type: multiple_choice
        doc_to_text: ""
        doc_to_choice: "{{{{[sentence_good, sentence_bad]}}}}"
        doc_to_target: 0
        target_delimiter: " "
        metric_list:
          - metric: acc
        """)
    )
    return root / "tasks"


def load_task_module(task_dir: str):
    """Import ``lm_eval_tasks/<task_dir>/utils.py`` under a unique name.

    Every task folder names its helpers ``utils.py`` (lm-eval's convention), so importing
    them as ``utils`` from ``sys.path`` would hand the second test module the first one's.
    """
    path = REPO / "lm_eval_tasks" / task_dir / "utils.py"
    spec = importlib.util.spec_from_file_location(f"lm_eval_tasks_{task_dir}_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_lm_eval(model_args: str, tasks, out: Path, data: Path, include=REPO / "lm_eval_tasks") -> Path:
    """``python -m lm_eval --model babymerge`` as a user runs it, offline, samples logged into
    ``out``, evaluation data from ``data`` (``$BABYMERGE_DATA``); a failure fails the test with
    lm_eval's stderr. Returns ``out``."""
    from helpers.commands import lm_eval_command

    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = lm_eval_command(model_args, tasks, include=include, out=out)
    env = {**os.environ, "BABYMERGE_DATA": str(data), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=out.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return out
