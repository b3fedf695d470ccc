"""GLUE fine-tuning the BabyLM way: the official 2025 pipeline's fine-tuner,
unmodified and with babymerge not importable, fine-tunes our checkpoints, and what its
backbone sees for a text pair is what training showed it for text.

The reference for the pipeline's predictions is a hand-built forward pass of the fine-tuned
weights it saves (``--save``): the ids packed by the training packer (``train.data.pack_text``:
``<image>`` for the black image, each segment with its leading space followed by ``</s>``),
the black-image feature put in by hand, one example at a time (no padding), the last token's
state through the pipeline's classifier head written out by hand.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from babymerge.processing import BabyLlavaProcessor
from babymerge.prompt import pair_prompt, prompt_body
from train.data import pack_text

from conftest import PIPELINE, needs_pipeline
from helpers.data import GLUE_TASKS as TASKS
from helpers.data import glue_rows
from helpers.pipeline import COLLATE_CHECK, LEGACY_CHECKPOINT, run_without_babymerge

# eval_finetuning.sh's metrics (f1 is binary only)
METRICS = {"rte": ["accuracy", "f1", "mcc"], "mnli": ["accuracy"], "multirc": ["accuracy", "f1", "mcc"],
           "wsc": ["accuracy", "f1", "mcc"]}  # fmt: skip


def write_glue(root: Path) -> Path:
    data = root / "evaluation_data" / "full_eval" / "glue_filtered"
    data.mkdir(parents=True)
    for k, task in enumerate(TASKS):
        for split, n, seed in (("train", 8, 10 * k), ("valid", 6, 10 * k + 1)):
            rows = glue_rows(task, n, seed)
            (data / f"{task}.{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


def training_ids(tok, first: str, second: str, image_token: int) -> list[int]:
    """The pair as the training packer lays out two language-only segments after the black image."""
    a, b = (tok(prompt_body(t), add_special_tokens=False)["input_ids"] for t in (first, second))
    blocks, images, _ = pack_text([a, b], len(a) + len(b) + 2, tok.eos_token_id, image_token, [0, 0])
    assert images == [[-1]]  # the black image
    return blocks[0].tolist()


def hand_logits(checkpoint: Path, state: dict, texts: list[tuple[str, str]]) -> torch.Tensor:
    """The fine-tuned backbone and the pipeline's ClassifierHead (LayerNorm without affine, Linear,
    GELU, LayerNorm, Dropout, Linear: classifier_model.py) on each pair, unpadded, by hand."""
    model = AutoModel.from_pretrained(checkpoint).eval()
    model.load_state_dict({k[len("transformer.") :]: v for k, v in state.items() if k.startswith("transformer.")})
    tok = AutoTokenizer.from_pretrained(checkpoint)
    head = {k[len("classifier.nonlinearity.") :]: v for k, v in state.items() if k.startswith("classifier.")}
    width = model.config.text_config.hidden_size
    out = []
    with torch.no_grad():
        for first, second in texts:
            ids = torch.tensor([training_ids(tok, first, second, model.config.image_token_id)])
            embeds = model.language_model.embed_tokens(ids).clone()
            p = model.multi_modal_projector
            embeds[0, 0] = p.linear_2(p.act(p.linear_1(model.black_image_features)))
            h = model.language_model(inputs_embeds=embeds).last_hidden_state[0, -1]
            h = F.linear(F.layer_norm(h, (width,), eps=1e-5), head["1.weight"], head["1.bias"])
            h = F.layer_norm(F.gelu(h), (width,), eps=1e-5)
            out.append(F.linear(h, head["5.weight"], head["5.bias"]))
    return torch.stack(out)


def test_config_hidden_size_is_the_language_models(merged):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(merged)
    assert config.hidden_size == config.text_config.hidden_size == 64
    assert "hidden_size" not in json.loads((merged / "config.json").read_text())  # derived, not stored
    out = AutoModel.from_pretrained(merged)(input_ids=torch.tensor([[4, 20, 21]]))
    assert out.last_hidden_state.shape == (1, 3, 64) and not hasattr(out, "logits")


def test_processor_gives_a_pair_as_training_packs_two_segments(merged):
    """Each pair, padded left in a batch and truncated by the pipeline's call, is the training
    packer's ids of the two segments after the black image (without the second's ``</s>``)."""
    proc = BabyLlavaProcessor.from_pretrained(merged, padding_side="left")
    tok = AutoTokenizer.from_pretrained(merged)
    pairs = [TASKS[task][1](row) for task in TASKS for row in glue_rows(task, 2, 3)]
    enc = proc(pairs, return_tensors="pt", padding=True, truncation=True, max_length=512)  # as dataset.py calls it
    image = tok.convert_tokens_to_ids("<image>")
    for ids, mask, (first, second) in zip(enc.input_ids, enc.attention_mask, pairs):
        want = training_ids(tok, first, second, image)
        assert ids[mask.bool()].tolist() == want and ids[-len(want) :].tolist() == want  # left padding
    assert enc.attention_mask.min() == 0  # some were padded
    assert proc(text=pairs[0][0], text_pair=pairs[0][1])["input_ids"] == training_ids(tok, *pairs[0], image)
    assert pair_prompt("A b.", "C d.", "</s>") == ("<image> A b.</s>", " C d.")
    with pytest.raises(ValueError, match="offsets"):
        proc(pairs, return_offsets_mapping=True)


@pytest.mark.slow
@needs_pipeline
def test_official_finetuner_trains_our_checkpoints_as_a_hand_forward_pass(merged, tmp_path):
    """``evaluation_pipeline.finetune.run`` (unmodified, babymerge not importable) on a merged
    checkpoint for a two-label pair task (rte), mnli (3 labels) and the multirc and wsc
    templates, and on a checkpoint written before these files existed after ``python -m
    babymerge.remote_code``: its predictions and accuracy equal the hand-built forward pass of
    the weights it fine-tuned, and collate_preds accepts its prediction files."""
    data = write_glue(tmp_path)
    legacy = tmp_path / "legacy-ckpt"
    shutil.copytree(LEGACY_CHECKPOINT / "model", legacy)
    config = json.loads((legacy / "config.json").read_text())
    (legacy / "config.json").write_text(json.dumps({**config, "vision_encoder": str(LEGACY_CHECKPOINT / "encoder")}))
    subprocess.run([sys.executable, "-m", "babymerge.remote_code", str(legacy)], check=True, capture_output=True)
    runs = [(merged, task) for task in TASKS] + [(legacy, "rte")]
    argvs = [
        ["run", "--model_name_or_path", str(ckpt), "--task", task, "--num_labels", str(TASKS[task][0]),
         "--train_data", str(data / f"{task}.train.jsonl"), "--valid_data", str(data / f"{task}.valid.jsonl"),
         "--predict_data", str(data / f"{task}.valid.jsonl"), "--take_final", "--padding_side", "left",
         "--num_epochs", "1", "--batch_size", "4", "--metrics", *METRICS[task],
         "--metric_for_valid", "accuracy", "--results_dir", str(tmp_path / "results"), "--save",
         "--save_dir", str(tmp_path / "models")]
        for ckpt, task in runs
    ]  # fmt: skip
    code = f"import runpy, sys\nfor argv in {argvs!r}:\n    sys.argv = argv\n    runpy.run_module('evaluation_pipeline.finetune.run', run_name='__main__')\n"
    result = run_without_babymerge(tmp_path, code, PIPELINE)
    assert result.returncode == 0, result.stderr[-3000:]

    prediction_files, all_preds = [], set()
    for ckpt, task in runs:
        out = tmp_path / "results" / ckpt.stem / "main" / "finetune" / task
        preds = [p["pred"] for p in json.loads((out / "predictions.json").read_text())[task]["predictions"]]
        metrics = dict(line.split(": ") for line in (out / "results.txt").read_text().splitlines())
        rows = [json.loads(line) for line in (data / f"{task}.valid.jsonl").read_text().splitlines()]
        state = torch.load(tmp_path / "models" / ckpt.stem / task / "model.pt", map_location="cpu")
        logits = hand_logits(ckpt, state, [TASKS[task][1](r) for r in rows])
        assert logits.shape == (len(rows), TASKS[task][0])
        top2 = logits.topk(2, dim=-1).values
        assert (top2[:, 0] - top2[:, 1]).min() > 1e-5, "a near tie: choose other rows"
        assert preds == logits.argmax(-1).tolist(), (ckpt.name, task)
        accuracy = sum(p == r["label"] for p, r in zip(preds, rows)) / len(rows)
        assert float(metrics["accuracy"]) == pytest.approx(accuracy, abs=1e-12)
        print(f"{ckpt.name} {task}: preds {preds} labels {[r['label'] for r in rows]} {metrics}")
        if ckpt == merged:
            prediction_files.append(str(out / "predictions.json"))
            all_preds.add(tuple(preds))
    assert any(len(set(p)) > 1 for p in all_preds), "every prediction the same: the comparison would tell nothing"

    collated = subprocess.run(
        [sys.executable, "-c", COLLATE_CHECK, *prediction_files], capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PIPELINE)}, cwd=tmp_path,
    )  # fmt: skip
    assert collated.returncode == 0, collated.stderr[-2000:] + collated.stdout
    assert json.loads(collated.stdout.strip().splitlines()[-1]) == sorted(TASKS)
