"""CI smoke test of the built wheel, run by the clean venv's python from a directory outside the checkout.

    cd "$(mktemp -d)" && /path/to/clean-venv/bin/python /path/to/checkout/.ci/wheel_smoke.py

It checks what a user gets from ``pip install babymerge-*.whl`` alone: ``import babymerge``
resolves to site-packages (not to a checkout), the ``babymerge`` command merges two tiny
checkpoints written here, and the plain ``lm_eval`` command finds ``--model babymerge`` and the
packaged tasks (``--include_path "$(babymerge tasks-path)"``) and scores 5 pairs of one BLiMP
paradigm from ``$BABYMERGE_DATA/blimp``. Only the installed packages are used (no demo/, no tests/).
"""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

PARADIGM = "anaphor_gender_agreement"
BIN = Path(sys.executable).parent


def run(*cmd: str) -> str:
    print("$", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, f"{cmd[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return done.stdout


def tiny_pair(root: Path) -> tuple[Path, Path]:
    """Two random 2-layer LlamaForCausalLM (different seeds) with one BPE tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from babymerge.tokenization import train_bpe_tokenizer

    sentences = [
        f"The {a} {v} the {b}."
        for a in ("dog", "cat", "girl", "boy")
        for v in ("sees", "likes")
        for b in ("ball", "tree")
    ]
    tokenizer = train_bpe_tokenizer(sentences * 20, vocab_size=300)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    paths = []
    for seed, name in ((1, "a"), (2, "b")):
        torch.manual_seed(seed)
        LlamaForCausalLM(config).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        paths.append(root / name)
    return paths[0], paths[1]


def main() -> int:
    import babymerge

    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    assert Path(babymerge.__file__).resolve().is_relative_to(site), (
        f"babymerge imported from {babymerge.__file__}, not {site}"
    )
    tasks = run(str(BIN / "babymerge"), "tasks-path").strip()
    assert tasks == babymerge.tasks_path() and Path(tasks).is_relative_to(site), tasks
    assert (Path(tasks) / "blimp" / f"blimp_{PARADIGM}.yaml").is_file(), f"blimp_{PARADIGM} is not packaged in {tasks}"
    data = Path(os.environ["BABYMERGE_DATA"])
    assert (data / "blimp" / f"{PARADIGM}.jsonl").is_file(), (
        f"set BABYMERGE_DATA to a folder with blimp/{PARADIGM}.jsonl"
    )

    work = Path.cwd()
    a, b = tiny_pair(work)
    run(
        str(BIN / "babymerge"),
        "merge",
        "--mm",
        str(a),
        "--lang",
        str(b),
        "--alpha",
        "0.3",
        "--out",
        str(work / "merged"),
        "--no-progress",
    )
    assert (work / "merged" / "model.safetensors").is_file() and (work / "merged" / "babymerge_recipe.json").is_file()

    run(
        str(BIN / "lm_eval"),
        "--model",
        "babymerge",
        "--model_args",
        f"pretrained={a},lang_ckpt={b},alpha=0.3",
        "--tasks",
        f"blimp_{PARADIGM}",
        "--include_path",
        tasks,
        "--limit",
        "5",
        "--device",
        "cpu",
        "--batch_size",
        "auto",
        "--output_path",
        str(work / "results"),
    )
    results = json.loads(next((work / "results").rglob("results_*.json")).read_text())
    task = results["results"][f"blimp_{PARADIGM}"]
    assert results["n-samples"][f"blimp_{PARADIGM}"]["effective"] == 5, results["n-samples"]
    assert task["acc,none"] in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0), task
    assert "lang_ckpt" in str(results["config"]["model_args"]), results["config"]
    print(f"wheel smoke test passed: merged in {work / 'merged'}; blimp_{PARADIGM} acc={task['acc,none']} on 5 pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
