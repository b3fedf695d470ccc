"""BLiMP tasks: structure, exact agreement with lm-eval's `hf` model, the real lm_eval CLI, bad data."""

import json
import os
import subprocess
from pathlib import Path

import lm_eval
import pytest
import yaml
from lm_eval.tasks import TaskManager

from babymerge import BabyMergeError
from babymerge.lm_eval_model import BabyMergeLM
from conftest import BLIMP, load_task_module, needs_blimp

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "lm_eval_tasks"
blimp_utils = load_task_module("blimp")  # the tasks' own module, as lm-eval loads it

PARADIGMS = ["anaphor_gender_agreement", "determiner_noun_agreement_2", "wh_island"]


def group(name):
    return yaml.safe_load((TASKS / "blimp" / f"{name}.yaml").read_text())


def test_tasks_and_groups_cover_the_67_paradigms():
    every = group("blimp")["task"]
    assert len(every) == len(set(every)) == 67 and group("blimp_macro")["task"] == every
    assert group("blimp")["aggregate_metric_list"][0]["weight_by_size"] is True  # micro
    assert group("blimp_macro")["aggregate_metric_list"][0]["weight_by_size"] is False  # macro
    fields = sorted(p.stem for p in (TASKS / "blimp").glob("blimp_field_*.yaml"))
    assert fields == ["blimp_field_morphology", "blimp_field_semantics", "blimp_field_syntax", "blimp_field_syntax_semantics"]
    phenomena = sorted(p.stem for p in (TASKS / "blimp").glob("blimp_phenomenon_*.yaml"))
    assert len(phenomena) == 12
    for family in (fields, phenomena):  # each family partitions the 67 paradigms
        members = [t for g in family for t in group(g)["task"]]
        assert sorted(members) == sorted(every)
    assert len(group("blimp_filtered")["task"]) == 67 and len(group("blimp_supplement")["task"]) == 5
    names = TaskManager(include_path=str(TASKS)).all_tasks
    assert {"blimp", "blimp_macro", "blimp_filtered", "blimp_supplement", "blimp_wh_island"} <= set(names)


def test_a_tie_counts_as_wrong():
    assert blimp_utils.process_results({}, [(-3.0, False), (-3.0, False)]) == {"acc": 0.0, "ties": 1.0}
    assert blimp_utils.process_results({}, [(-2.0, False), (-3.0, False)]) == {"acc": 1.0, "ties": 0.0}
    assert blimp_utils.process_results({}, [(-4.0, False), (-3.0, False)]) == {"acc": 0.0, "ties": 0.0}


def test_missing_data_and_malformed_lines_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("BABYMERGE_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(BabyMergeError, match=r"nowhere/blimp does not exist.*BABYMERGE_DATA.*alexwarstadt/blimp.*nyu-mll/blimp"):
        blimp_utils.load_pairs("blimp", "wh_island")
    (tmp_path / "data" / "blimp").mkdir(parents=True)
    bad = tmp_path / "data" / "blimp" / "wh_island.jsonl"
    bad.write_text(json.dumps({"sentence_good": "A b.", "sentence_bad": "B a."}) + "\n{oops\n")
    monkeypatch.setenv("BABYMERGE_DATA", str(tmp_path / "data"))
    with pytest.raises(BabyMergeError, match=r"wh_island.jsonl, line 2: not valid JSON"):
        blimp_utils.load_pairs("blimp", "wh_island")
    bad.write_text(json.dumps({"sentence_good": "A b."}) + "\n")
    with pytest.raises(BabyMergeError, match=r"line 1: needs non-empty 'sentence_good' and 'sentence_bad'"):
        blimp_utils.load_pairs("blimp", "wh_island")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """$BABYMERGE_DATA with blimp/ (the official files, linked) and a blimp_filtered/ subset."""
    root = tmp_path_factory.mktemp("evaluation_data")
    if BLIMP.is_dir():
        (root / "blimp").symlink_to(BLIMP)
        (root / "blimp_filtered").mkdir()
        for uid, n in zip(PARADIGMS, (7, 3, 5)):  # different sizes: micro and macro averages differ
            lines = (BLIMP / f"{uid}.jsonl").read_text().splitlines()[:n]
            (root / "blimp_filtered" / f"{uid}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def evaluate(model, tasks, data, extra_tasks=None, **kwargs):
    os.environ["BABYMERGE_DATA"] = str(data)
    include = [str(TASKS)] + ([str(extra_tasks)] if extra_tasks else [])
    try:
        return lm_eval.simple_evaluate(model=model, tasks=tasks, task_manager=TaskManager(include_path=include), log_samples=True, **kwargs)
    finally:
        del os.environ["BABYMERGE_DATA"]


def loglikelihoods(out, task):
    return [float(r[0][0]) for s in sorted(out["samples"][task], key=lambda s: s["doc_id"]) for r in s["resps"]]


@needs_blimp
def test_babymerge_equals_lm_evals_hf_model_on_blimp(toy, data):
    from lm_eval.models.huggingface import HFLM

    tasks = [f"blimp_{u}" for u in PARADIGMS]
    ours = evaluate(BabyMergeLM(pretrained=str(toy.lang), image_prefix="none", device="cpu"), tasks, data, limit=25)
    ref = evaluate(HFLM(pretrained=str(toy.lang), dtype="float32", device="cpu", batch_size=8), tasks, data, limit=25)
    for task in tasks:
        a, b = loglikelihoods(ours, task), loglikelihoods(ref, task)
        assert len(a) == 50 and max(abs(x - y) for x, y in zip(a, b)) < 1e-4
        assert ours["results"][task]["acc,none"] == ref["results"][task]["acc,none"]


@needs_blimp
def test_micro_and_macro_averages(toy, data, tmp_path):
    """Groups as blimp (weight_by_size: true) and blimp_macro (false) are built, over three
    paradigms of different sizes, so the two averages differ."""
    model = BabyMergeLM(pretrained=str(toy.mm), device="cpu")
    per_task = evaluate(model, [f"blimp_filtered_{u}" for u in PARADIGMS], data)["results"]
    sizes = dict(zip(PARADIGMS, (7, 3, 5)))
    accs = {u: per_task[f"blimp_filtered_{u}"]["acc,none"] for u in PARADIGMS}
    expected = {
        "micro": sum(accs[u] * sizes[u] for u in PARADIGMS) / sum(sizes.values()),
        "macro": sum(accs.values()) / len(PARADIGMS),
    }
    for kind, weight_by_size in (("micro", True), ("macro", False)):
        spec = {**group("blimp" if weight_by_size else "blimp_macro"), "group": f"test_{kind}", "task": [f"blimp_filtered_{u}" for u in PARADIGMS]}
        (tmp_path / f"test_{kind}.yaml").write_text(yaml.safe_dump(spec))
        result = evaluate(model, [f"test_{kind}"], data, extra_tasks=tmp_path)["results"][f"test_{kind}"]
        assert result["acc,none"] == pytest.approx(expected[kind])
    assert expected["micro"] != pytest.approx(expected["macro"]) or len(set(accs.values())) == 1


def run_lm_eval(model_args, out, data, launcher=("lm_eval",), limit=10):
    """Run the plain `lm_eval` command (or it under a launcher) on the three paradigms; returns
    the per-task log-likelihoods (doc order) from --log_samples, the results and stderr."""
    cmd = [*launcher, "--model", "babymerge", "--model_args", model_args, "--tasks", ",".join(f"blimp_{u}" for u in PARADIGMS),
           "--include_path", str(TASKS), "--limit", str(limit), "--device", "cpu", "--batch_size", "auto",
           "--output_path", str(out), "--log_samples"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "BABYMERGE_DATA": str(data)})
    assert result.returncode == 0, result.stderr[-3000:]
    samples = {f.name.removeprefix("samples_").split("_20")[0]: [json.loads(line) for line in f.read_text().splitlines()] for f in out.rglob("samples_*.jsonl")}
    lls = {k: [float(r[0][0]) for s in sorted(v, key=lambda s: s["doc_id"]) for r in s["resps"]] for k, v in samples.items()}
    assert len(lls) == 3 and all(len(v) == 2 * limit for v in lls.values())
    return lls, json.loads(next(out.rglob("results_*.json")).read_text())["results"], result.stderr


@needs_blimp
def test_lm_eval_executable_end_to_end_alpha_0_and_1(toy, data, tmp_path):
    """The plain `lm_eval` command finds --model babymerge; alpha=0 and 1 give the two source models."""
    merged0, res0, _ = run_lm_eval(f"pretrained={toy.mm},lang_ckpt={toy.lang},alpha=0", tmp_path / "a0", data)
    alone, res_mm, _ = run_lm_eval(f"pretrained={toy.mm}", tmp_path / "mm", data)
    merged1, res1, _ = run_lm_eval(f"pretrained={toy.mm},lang_ckpt={toy.lang},alpha=1,image_prefix=none", tmp_path / "a1", data)
    twin, res_lang, _ = run_lm_eval(f"pretrained={toy.lang}", tmp_path / "lang", data)
    assert merged0 == alone and res0 == res_mm
    assert merged1 == twin
    assert all(res1[t]["acc,none"] == res_lang[t]["acc,none"] for t in res1)
    assert merged0 != merged1


@needs_blimp
def test_data_parallel_two_cpu_processes_equal_one(toy, data, tmp_path):
    """`torchrun --nproc_per_node 2 -m lm_eval` (how data parallel runs on CPUs; `accelerate
    launch` on GPUs): each rank scores its share, lm-eval gathers every sample, and the
    results equal a single process's. An odd limit leaves the ranks unequal shares."""
    model_args = f"pretrained={toy.mm},lang_ckpt={toy.lang},alpha=0.3"
    single, res_single, _ = run_lm_eval(model_args, tmp_path / "single", data, limit=11)
    torchrun = ("torchrun", "--nproc_per_node", "2", "-m", "lm_eval")
    parallel, res_parallel, log = run_lm_eval(model_args, tmp_path / "dp", data, launcher=torchrun, limit=11)
    assert "on rank 1" in log
    for task in single:
        assert max(abs(x - y) for x, y in zip(single[task], parallel[task])) < 1e-4
        assert res_single[task]["acc,none"] == res_parallel[task]["acc,none"]
