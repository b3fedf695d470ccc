"""BLiMP tasks: structure, exact agreement with lm-eval's `hf` model, the real lm_eval CLI, bad data."""

import json
import subprocess
import sys
from pathlib import Path

import lm_eval
import pytest
import yaml
from lm_eval.tasks import TaskManager

from babymerge import BabyMergeError
from babymerge.lm_eval_model import BabyMergeLM
from demo.toy import synthetic_sentences

from conftest import BLIMP, REPO, load_task_module, needs_blimp
from helpers.commands import LM_EVAL, lm_eval_command

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
    assert fields == [
        "blimp_field_morphology",
        "blimp_field_semantics",
        "blimp_field_syntax",
        "blimp_field_syntax_semantics",
    ]
    phenomena = sorted(p.stem for p in (TASKS / "blimp").glob("blimp_phenomenon_*.yaml"))
    assert len(phenomena) == 12
    for family in (fields, phenomena):  # each family partitions the 67 paradigms
        members = [t for g in family for t in group(g)["task"]]
        assert sorted(members) == sorted(every)
    assert len(group("blimp_filtered")["task"]) == 67 and len(group("blimp_supplement")["task"]) == 5
    index = TaskManager(include_path=str(TASKS)).task_index  # with lm-eval's own tasks, which include blimp_<UID> too
    for name in (
        "blimp_filtered",
        "blimp_supplement",
        "blimp_wh_island",
    ):  # ours replace lm-eval's hub-downloading ones
        assert Path(index[name].yaml_path).parent == TASKS / "blimp", (name, index[name].yaml_path)
    assert {"blimp", "blimp_macro"} <= set(index)


def test_a_tie_counts_as_wrong():
    def pair(good, bad):
        return blimp_utils.process_results({}, [(good, False), (bad, False)])

    assert pair(-3.0, -3.0) == {"acc": 0.0, "acc_pipeline": 1.0, "ties": 1.0}
    assert pair(-2.0, -3.0) == {"acc": 1.0, "acc_pipeline": 1.0, "ties": 0.0}
    assert pair(-4.0, -3.0) == {"acc": 0.0, "acc_pipeline": 0.0, "ties": 0.0}


def test_missing_data_and_malformed_lines_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("BABYMERGE_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(
        BabyMergeError, match=r"nowhere/blimp does not exist.*BABYMERGE_DATA.*alexwarstadt/blimp.*nyu-mll/blimp"
    ):
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
    """$BABYMERGE_DATA with blimp/: the official files, linked (the tests using it are @needs_blimp)."""
    root = tmp_path_factory.mktemp("evaluation_data")
    if BLIMP.is_dir():
        (root / "blimp").symlink_to(BLIMP)
    return root


def evaluate(model, tasks, data, extra_tasks=None, **kwargs):
    include = [str(TASKS)] + ([str(extra_tasks)] if extra_tasks else [])
    task_manager = TaskManager(
        include_path=include, include_defaults=False
    )  # ours only: indexing lm-eval's takes seconds
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BABYMERGE_DATA", str(data))
        return lm_eval.simple_evaluate(model=model, tasks=tasks, task_manager=task_manager, log_samples=True, **kwargs)


def loglikelihoods(out, task):
    return [float(r[0][0]) for s in sorted(out["samples"][task], key=lambda s: s["doc_id"]) for r in s["resps"]]


@pytest.mark.slow
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


def test_micro_and_macro_averages(toy, tmp_path):
    """Groups as blimp (weight_by_size: true) and blimp_macro (false), over three paradigms of
    sizes 7, 3 and 5 whose accuracies are known without the model: 7 ties (good == bad: wrong
    by the tie rule, acc 0), 3 pairs whose bad sentence is the good one continued (tokens
    appended: a strictly lower log-probability, acc 1), 5 toy-grammar pairs (acc a, read from
    the run). By hand: micro = (0*7 + 1*3 + 5a) / 15, macro = (0 + 1 + a) / 3 = micro + 2/15."""
    sentences = synthetic_sentences(15, seed=5)
    pairs = {
        PARADIGMS[0]: [(s, s) for s in sentences[:7]],
        PARADIGMS[1]: [(s, s + " " + t) for s, t in zip(sentences[7:10], sentences[:3])],
        PARADIGMS[2]: [(s, " ".join(s.split()[:-1][::-1]) + ".") for s in sentences[10:]],
    }
    data = tmp_path / "evaluation_data"
    (data / "blimp_filtered").mkdir(parents=True)
    for uid, rows in pairs.items():
        lines = [json.dumps({"sentence_good": good, "sentence_bad": bad}) for good, bad in rows]
        (data / "blimp_filtered" / f"{uid}.jsonl").write_text("\n".join(lines) + "\n")
    model = BabyMergeLM(pretrained=str(toy.mm), device="cpu")
    per_task = evaluate(model, [f"blimp_filtered_{u}" for u in PARADIGMS], data)["results"]
    accs = [per_task[f"blimp_filtered_{u}"]["acc,none"] for u in PARADIGMS]
    assert accs[:2] == [0.0, 1.0] and per_task[f"blimp_filtered_{PARADIGMS[0]}"]["ties,none"] == 1.0
    a = accs[2]
    expected = {"micro": (3 + 5 * a) / 15, "macro": (1 + a) / 3}
    for kind, weight_by_size in (("micro", True), ("macro", False)):
        spec = {
            **group("blimp" if weight_by_size else "blimp_macro"),
            "group": f"test_{kind}",
            "task": [f"blimp_filtered_{u}" for u in PARADIGMS],
        }
        (tmp_path / f"test_{kind}.yaml").write_text(yaml.safe_dump(spec))
        result = evaluate(model, [f"test_{kind}"], data, extra_tasks=tmp_path)["results"][f"test_{kind}"]
        assert result["acc,none"] == pytest.approx(expected[kind])


def run_lm_eval(model_args, out, data, launcher=LM_EVAL, limit=10):
    """Run the `lm_eval` command (or it under a launcher) on the three paradigms; returns the
    per-task log-likelihoods (doc order) from --log_samples, the results and stderr."""
    cmd = lm_eval_command(model_args, [f"blimp_{u}" for u in PARADIGMS], include=TASKS, out=out, limit=limit,
                          launcher=launcher)  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BABYMERGE_DATA", str(data))
        result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    samples = {
        f.name.removeprefix("samples_").split("_20")[0]: [json.loads(line) for line in f.read_text().splitlines()]
        for f in out.rglob("samples_*.jsonl")
    }
    lls = {
        k: [float(r[0][0]) for s in sorted(v, key=lambda s: s["doc_id"]) for r in s["resps"]]
        for k, v in samples.items()
    }
    assert len(lls) == 3 and all(len(v) == 2 * limit for v in lls.values())
    return lls, json.loads(next(out.rglob("results_*.json")).read_text())["results"], result.stderr


@pytest.mark.slow
@needs_blimp
def test_lm_eval_executable_end_to_end_alpha_0_and_1(toy, data, tmp_path):
    """The plain `lm_eval` command finds --model babymerge; alpha=0 and 1 give the two source models."""
    merged0, res0, _ = run_lm_eval(f"pretrained={toy.mm},lang_ckpt={toy.lang},alpha=0", tmp_path / "a0", data)
    alone, res_mm, _ = run_lm_eval(f"pretrained={toy.mm}", tmp_path / "mm", data)
    merged1, res1, _ = run_lm_eval(
        f"pretrained={toy.mm},lang_ckpt={toy.lang},alpha=1,image_prefix=none", tmp_path / "a1", data
    )
    twin, res_lang, _ = run_lm_eval(f"pretrained={toy.lang}", tmp_path / "lang", data)
    assert merged0 == alone and res0 == res_mm
    assert merged1 == twin
    assert all(res1[t]["acc,none"] == res_lang[t]["acc,none"] for t in res1)
    assert merged0 != merged1


@pytest.mark.slow
@needs_blimp
def test_data_parallel_two_cpu_processes_equal_one(toy, data, tmp_path):
    """`torchrun --nproc_per_node 2 -m lm_eval` (how data parallel runs on CPUs; `accelerate
    launch` on GPUs): each rank scores its share, lm-eval gathers every sample, and the
    results equal a single process's. An odd limit leaves the ranks unequal shares."""
    model_args = f"pretrained={toy.mm},lang_ckpt={toy.lang},alpha=0.3"
    single, res_single, _ = run_lm_eval(model_args, tmp_path / "single", data, limit=11)
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "lm_eval")  # = torchrun
    parallel, res_parallel, log = run_lm_eval(model_args, tmp_path / "dp", data, launcher=torchrun, limit=11)
    assert "on rank 1" in log
    for task in single:
        assert max(abs(x - y) for x, y in zip(single[task], parallel[task])) < 1e-4
        assert res_single[task]["acc,none"] == res_parallel[task]["acc,none"]
