"""``python -m train.protocol``: the whole protocol on two tiny runs, interrupted and resumed.

Two word-count checkpoint pairs (``chck_1M``, ``chck_2M``: tiny BabyLLaVA models and their Llama twins,
one tokenizer) and evaluation data in the pipeline's layout (``demo.babylm2025_data`` for the zero-shot
files; GLUE rows with each task's fields; a ``cdi_childes.json``; DevBench manifests with drawn pictures).
To stay fast, fast and full run one wug task each (the protocol's hidden ``--fast-tasks``/``--full-tasks``),
fine-tuning one epoch. Checked against independent references:

* the submission holds what each part's own command writes on its own (the lm-eval predictions, the
  fine-tuner's predictions, DevBench's arrays), and lists the parts that tiny runs cannot make;
* a run interrupted after its fourth step and rerun does not redo the finished steps (a counter over
  the steps executed, and their outputs' mtimes) and writes the same file as an uninterrupted run;
* missing data is refused in one line naming what to fetch, before any step runs.
"""

import json
import shutil

import numpy as np
import pytest

from babymerge.babylm.sizes import FAST_TASKS, FULL_TEXT_TASKS, VISION_TASKS
from babymerge.babylm.tasks import GLUE_2025
from demo.babylm2025_data import write_evaluation_data
from demo.toy import synthetic_sentences
from train import protocol
from train.glue import TASKS as GLUE_TASKS
from train.glue import task_file

from conftest import word_count_runs
from helpers.data import draw

pytestmark = pytest.mark.slow
NAMES = ["chck_1M", "chck_2M"]
FAST, FULL = "babylm2025_fast_wug_adj_wug_adj", "babylm2025_wug_adj_wug_adj"
CDI = {"dog": [{"context": "The big"}, {"context": "A small"}], "ball": [{"context": "The girl holds the red"}]}
DEVBENCH = {"lex-viz_vocab": 2, "gram-trog": 2, "sem-things": 3}  # trials
SUBMISSION = "submission/all_full_preds_and_fast_scores_causal.json"


def write_glue(data, n_train=8, n_valid=4):
    """Every 2025 GLUE task's files, rows with the task's fields and labels."""
    words = synthetic_sentences(200, 3)
    for task in GLUE_2025:
        spec = GLUE_TASKS[task]
        for split, n in (("train", n_train), ("valid", n_valid)):
            rows = [{**{key: words[(i * 7 + k) % 200] for k, key in enumerate((*spec.first, *spec.second))},
                     "label": i % spec.num_labels} for i in range(n)]  # fmt: skip
            path = task_file(data, task, split)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_devbench(root):
    """assets/<task>/manifest.csv (image1..4, text1; THINGS image1) and drawn pictures, download_data.sh's layout."""
    for task, n in DEVBENCH.items():
        folder = root / "assets" / task
        folder.mkdir(parents=True)
        if task == "sem-things":
            lines = ["image1"] + [f"object_images_CC0/thing{i}.jpg" for i in range(n)]
        else:
            lines = ["image1,image2,image3,image4,text1"]
            lines += [",".join(f"images/{task}{t}_{i}.png" for i in range(4)) + f",word{t}" for t in range(n)]
        (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
        for line in lines[1:]:
            for rel in line.split(",")[: 4 if task != "sem-things" else 1]:
                draw(folder / rel, rel)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol")
    word_count_runs(root, NAMES)
    data = write_evaluation_data(root / "evaluation_data", n=1, reading_sentences=2, vqa=False)
    write_glue(data)
    (data / "full_eval" / "aoa").mkdir(parents=True)
    (data / "full_eval" / "aoa" / "cdi_childes.json").write_text(json.dumps(CDI))
    write_devbench(data / "full_eval" / "devbench")
    wug = sum(1 for _ in open(data / "full_eval/wug_adj_nominalization/wug_adj_nominalization.jsonl"))
    fast_wug = sum(1 for _ in open(data / "fast_eval/wug_adj_nominalization/wug_adj_nominalization.jsonl"))
    sizes = {
        "full": {**{t: 0 for t in FULL_TEXT_TASKS + VISION_TASKS}, "wug_adj": wug, **{t: 4 for t in GLUE_2025}},
        "fast": {**{t: 0 for t in FAST_TASKS}, "wug_adj": fast_wug},
        "aoa": 3,
        "devbench": {"lex-viz_vocab": [2, 4, 1], "trog": [2, 4, 1], "things": [3, 3]},
    }
    (root / "sizes.json").write_text(json.dumps(sizes))
    return root


def argv(root, out, *extra):
    return ["--mm", str(root / "mm"), "--lang", str(root / "lang"), "--alphas", "0.3", "--data",
            str(root / "evaluation_data"), "--out", str(out), "--sizes", str(root / "sizes.json"),
            "--fast-tasks", FAST, "--full-tasks", FULL, "--finetune-args", "--epochs 1 --batch-size 4",
            "--model-args", "device=cpu", "--no-progress", *extra]  # fmt: skip


class Interrupt(BaseException):
    """Stands for a kill: nothing in the protocol catches it."""


@pytest.fixture(scope="module")
def runs(setup, tmp_path_factory):
    """An uninterrupted run, and a run interrupted after its 4th step then rerun; the steps each executed."""
    mp = pytest.MonkeyPatch()
    executed = {"whole": [], "cut": [], "resumed": []}
    original = protocol.execute
    current = []

    def counting(step):
        if current[0] == "cut" and len(executed["cut"]) == 4:
            raise Interrupt
        original(step)
        executed[current[0]].append(step.name)

    mp.setattr(protocol, "execute", counting)
    outs = {"whole": tmp_path_factory.mktemp("whole") / "out", "cut": tmp_path_factory.mktemp("cut") / "out"}
    try:
        current[:] = ["whole"]
        assert protocol.main(argv(setup, outs["whole"])) == 0
        current[:] = ["cut"]
        with pytest.raises(Interrupt):
            protocol.main(argv(setup, outs["cut"]))
        mtimes = {p: p.stat().st_mtime_ns for p in outs["cut"].rglob("*") if p.is_file() and "protocol" not in p.name}
        current[:] = ["resumed"]
        assert protocol.main(argv(setup, outs["cut"])) == 0
    finally:
        mp.undo()
    return outs, executed, mtimes


def test_steps_in_order_and_the_submission_holds_each_parts_own_output(setup, runs):
    outs, executed, _ = runs
    assert executed["whole"] == [
        "fast sweep 0.3", "fast a=0.3 chck_1M", "fast a=0.3 chck_2M", "full a=0.3", "glue a=0.3", "aoa a=0.3",
        "devbench a=0.3", "submit a=0.3 [fast,full,glue,aoa,devbench]",
    ]  # fmt: skip
    out = outs["whole"] / "a0.3"
    sub = json.loads((out / SUBMISSION).read_text())
    # full: the wug predictions lm-eval logged for the final pair (chck_2M) merged at 0.3
    (samples,) = (out / "full").rglob(f"samples_{FULL}_*.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(sub["wug_adj"]["wug_adj"]["predictions"]) == len(rows) > 0
    (results,) = (out / "full").rglob("results_*.json")
    model_args = str(json.loads(results.read_text())["config"]["model_args"])
    assert str(setup / "mm" / "chck_2M") in model_args and str(setup / "lang" / "chck_2M") in model_args
    # fast: one entry per official checkpoint; the two the runs have are filled, the others {}
    wug = sub["fast_eval_results"]["wug_adj"]
    assert len(wug) == 28 and all(wug[:2]) and not any(wug[2:])
    # GLUE: the fine-tuner's predictions files, as written
    for task in GLUE_2025:
        written = json.loads((out / "glue" / "chck_2M" / "main" / "finetune" / task / "predictions.json").read_text())
        assert sub["glue"][task] == written[task]
    # DevBench: babymerge devbench's arrays
    files = out / "devbench" / "zero_shot" / "devbench"
    assert np.allclose(sub["devbench"]["trog"]["predictions"], np.load(files / "gram-trog.npy"))
    assert np.allclose(sub["devbench"]["things"]["predictions"], np.load(files / "sem-things_pairwise_sims.npy"))
    # AoA: computed (3 rows per checkpoint), left out of the file: 2 of the 28 checkpoints
    surprisal = json.loads((out / "aoa" / "surprisal.json").read_text())
    assert [r["step"] for r in surprisal["results"]] == ["chck_1M"] * 3 + ["chck_2M"] * 3
    assert "aoa" not in sub
    lacks = (out / "submission_missing.txt").read_text().strip().partition("missing: ")[2].split(", ")
    assert "aoa" in lacks and "fast/chck_3M" in lacks and "fast/chck_1M" not in lacks  # as babymerge submit lists it
    assert "glue" not in " ".join(lacks) and "devbench" not in " ".join(lacks)
    summary = (outs["whole"] / "summary.csv").read_text()
    assert "glue rte accuracy" in summary and "aoa (in the submission: needs all the track's checkpoints)" in summary
    assert (outs["whole"] / "sweep" / "results.csv").is_file()


def test_a_killed_run_resumes_without_redoing_steps_and_writes_the_same_file(runs):
    outs, executed, mtimes = runs
    assert executed["cut"] == executed["whole"][:4]
    assert executed["resumed"] == executed["whole"][4:]  # nothing finished is done again
    assert mtimes and all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    whole, cut = ((o / "a0.3" / SUBMISSION).read_text() for o in (outs["whole"], outs["cut"]))
    assert json.loads(whole) == json.loads(cut)


def test_missing_data_is_refused_in_one_line_before_any_work(setup, tmp_path, capsys, monkeypatch):
    data = tmp_path / "evaluation_data"
    data.mkdir()
    monkeypatch.setattr(protocol, "execute", lambda step: pytest.fail(f"{step.name} ran"))
    args = argv(setup, tmp_path / "out")
    args[args.index("--data") + 1] = str(data)
    args = [a for a in args if a not in ("--fast-tasks", FAST, "--full-tasks", FULL)]
    assert protocol.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and not (tmp_path / "out").exists()
    assert err.startswith("error: missing data for fast, full, glue, aoa, devbench:")
    assert "https://osf.io/ryjfm/" in err and "download_data.sh" in err
    assert f"{data / 'full_eval/glue_filtered'}" in err and err.endswith("--skip fast,full,glue,aoa,devbench")


def test_other_settings_into_the_same_out_are_refused_before_any_step(setup, runs, capsys, monkeypatch, tmp_path):
    out = shutil.copytree(runs[0]["whole"], tmp_path / "out")  # a finished protocol folder, this test's own
    monkeypatch.setattr(protocol, "execute", lambda step: pytest.fail(f"{step.name} ran"))
    args = argv(setup, out)
    args[args.index("--finetune-args") + 1] = "--epochs 2 --batch-size 4"
    assert protocol.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "was run with other settings (finetune_args: '--epochs 1" in err
    # the same settings with another alpha: the finished alpha's steps are not run again
    ran = []
    monkeypatch.setattr(protocol, "execute", lambda step: ran.append(step.name))
    args = argv(setup, out)
    args[args.index("--alphas") + 1] = "0.3,0.6"
    monkeypatch.setattr(protocol, "summary_rows", lambda *a: [])
    assert protocol.main(args) == 0
    assert ran and not [name for name in ran if "a=0.3" in name] and ran[0] == "fast sweep 0.3,0.6"
