"""The documentation against the code: the generated model_args table, and the README's quick start run as written."""

import csv
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from babymerge import model_args

from conftest import REPO


def adapter_class():
    """The class lm-eval builds for ``--model babymerge``, found as lm-eval finds it."""
    import lm_eval.models  # noqa: F401  (fills the registry, with the start-up hook's lazy entry)
    from lm_eval.api.registry import get_model

    return get_model("babymerge")


def test_model_args_table_lists_exactly_the_adapters_arguments_with_their_defaults():
    params = {
        name: p
        for name, p in inspect.signature(adapter_class().__init__).parameters.items()
        if name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD
    }
    documented = {a.name: a for a in model_args.MODEL_ARGS}
    assert sorted(documented) == sorted(params), "edit babymerge/model_args.py to match BabyMergeLM.__init__"
    for name, p in params.items():  # a literal default is written as such (a computed one, None, in words)
        if p.default is not inspect.Parameter.empty and p.default is not None:
            assert documented[name].default.strip("`").lower() == str(p.default).lower(), name


def test_evaluation_docs_hold_the_generated_model_args_table():
    text = (REPO / "docs" / "evaluation.md").read_text()
    assert model_args.generated_block() in text, (
        "docs/evaluation.md's model_args table is not the generated one: run "
        "`python -m babymerge.model_args --write docs/evaluation.md`"
    )


def test_model_args_write_replaces_only_the_generated_block(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{model_args.BEGIN}\n| stale |\n{model_args.END}\nafter\n")
    result = subprocess.run([sys.executable, "-m", "babymerge.model_args", "--write", str(doc)], capture_output=True)
    assert result.returncode == 0, result.stderr
    assert doc.read_text() == f"before\n{model_args.generated_block()}\nafter\n"
    doc.write_text("no table here\n")
    result = subprocess.run(
        [sys.executable, "-m", "babymerge.model_args", "--write", str(doc)], capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and doc.read_text() == "no table here\n"


def quick_start() -> str:
    """The first ```bash block under the README's "## Quick start" heading."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def test_readme_is_a_front_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    assert "```bash\nmake test\n```" in readme  # the test command CI runs (.ci/run), exactly
    for link in re.findall(r"\]\(((?:docs/|CONTRIBUTING)[^)#]*)", readme):
        assert (REPO / link).is_file(), link
    for doc in (REPO / "docs").glob("*.md"):  # every image a docs page shows is there
        for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", doc.read_text()):
            assert (doc.parent / image).is_file(), (doc.name, image)


@pytest.mark.slow
def test_readme_quick_start_runs_as_written(tmp_path):
    """In a fresh folder holding what a clone has (``demo/``) and this venv as ``.venv``, the
    quick start runs with bash, offline, and its results hold: the merged checkpoint is
    0.7·mm + 0.3·lang, and lm_eval's alpha=0.3 scores are the sweep's alpha=0.3 cell."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("the quick start activates a virtual environment; run the tests from one (make test)")
    shutil.copytree(REPO / "demo", tmp_path / "demo", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    script = tmp_path / "quick_start.sh"
    script.write_text(quick_start())
    env = {k: v for k, v in os.environ.items() if k not in ("BABYMERGE_DATA", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    start = time.monotonic()
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.monotonic() - start
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(f"quick start: {seconds:.0f} s")
    toy = tmp_path / "toy"

    config = json.loads((toy / "mm" / "config.json").read_text())  # names the published encoder, not a temporary
    assert config["vision_encoder"] == str((toy / "encoder").resolve())
    assert not [p for p in toy.rglob("*.json") if ".tmp-" in p.read_text()]

    mm, lang = load_file(toy / "mm" / "model.safetensors"), load_file(toy / "lang" / "model.safetensors")
    merged = load_file(toy / "merged-a0.3" / "model.safetensors")
    name = "model.layers.1.mlp.up_proj.weight"
    expected = 0.7 * mm[f"model.language_model.{name.removeprefix('model.')}"] + 0.3 * lang[name]
    assert torch.allclose(merged[f"model.language_model.{name.removeprefix('model.')}"], expected, atol=1e-6)

    (results_file,) = (toy / "results").rglob("results_*.json")
    run = json.loads(results_file.read_text())
    results = run["results"]
    assert {t: n["effective"] for t, n in run["n-samples"].items()} == {
        "blimp_determiner_noun_agreement_1": 20,  # every pair and item demo.toy wrote
        "winoground": 8,
    }
    with open(toy / "sweep" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    cells = {(float(r["alpha"]), r["task"], r["metric"]): float(r["value"]) for r in rows}
    assert {a for a, _, _ in cells} == {0.0, 0.3, 1.0}
    for task, metric in (("blimp_determiner_noun_agreement_1", "acc"), ("winoground", "group_score")):
        assert cells[(0.3, task, metric)] == pytest.approx(results[task][f"{metric},none"], abs=1e-9)
    assert (toy / "sweep" / "score_vs_alpha.png").is_file() and (toy / "sweep" / "tradeoff.png").is_file()
