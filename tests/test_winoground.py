"""Winoground: text/image/group scores by hand, the real lm_eval CLI, and bad input."""

import json
import subprocess

import pytest
import torch
from PIL import Image
from transformers import AutoModelForCausalLM, AutoTokenizer

from babymerge import BabyMergeError
from babymerge.data.synthetic_winoground import write_dataset

from conftest import REPO, load_task_module
from helpers.commands import lm_eval_command

wino = load_task_module("winoground")  # the tasks' own module, as lm-eval loads it


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluation_data")
    write_dataset(root / "winoground", n=6, seed=1)
    return root


def test_scores_by_hand_ties_count_as_wrong():
    # s[(caption, image)]
    perfect = {(0, 0): -1.0, (1, 0): -5.0, (0, 1): -4.0, (1, 1): -2.0}
    text_only = {(0, 0): -1.0, (1, 0): -2.0, (0, 1): -3.0, (1, 1): -2.5}  # caption 1 prefers image 0: -2 > -2.5
    tie = {(0, 0): -1.0, (1, 0): -1.0, (0, 1): -4.0, (1, 1): -0.5}  # image 0 cannot tell the captions apart
    assert wino.scores(perfect) == {"text_score": 1.0, "image_score": 1.0, "group_score": 1.0}
    assert wino.scores(text_only) == {"text_score": 1.0, "image_score": 0.0, "group_score": 0.0}
    assert wino.scores(tie) == {"text_score": 0.0, "image_score": 1.0, "group_score": 0.0}
    task = object.__new__(wino.WinogroundTask)  # process_results needs no task state
    results = [[(perfect[p], False)] for p in wino.PAIRS]
    assert task.process_results({}, [r[0] for r in results]) == wino.scores(perfect)


def hand_scores(toy_dir, item):
    """The four log P(caption_i | image_j) by a plain forward of the model."""
    model, tok = AutoModelForCausalLM.from_pretrained(toy_dir), AutoTokenizer.from_pretrained(toy_dir)
    out = {}
    for i, j in wino.PAIRS:
        ids = torch.tensor([[model.config.image_token_id] + tok.encode(" " + item[f"caption_{i}"])])
        with torch.no_grad():
            features = model.encode_images(images=[item[f"image_{j}"]])
            logprobs = model(input_ids=ids, image_features=features).logits[0, :-1].log_softmax(-1)
        out[i, j] = float(logprobs.gather(1, ids[0, 1:, None]).sum())
    return out


@pytest.mark.slow
def test_lm_eval_cli_end_to_end(toy, data, tmp_path, monkeypatch):
    monkeypatch.setenv("BABYMERGE_DATA", str(data))
    cmd = lm_eval_command(f"pretrained={toy.mm},lang_ckpt={toy.lang},alpha=0.3", "winoground,winoground_by_tag",
                          out=tmp_path / "out")  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    samples = [
        json.loads(line)
        for f in (tmp_path / "out").rglob("samples_winoground_2*.jsonl")
        for line in f.read_text().splitlines()
    ]
    assert len(samples) == 6
    items = {it["id"]: it for it in wino.read_items(data / "winoground")}
    from babymerge import merge

    merged_dir = tmp_path / "merged"
    merge(toy.mm, toy.lang, alpha=0.3, out=merged_dir, progress=False)
    sample = min(samples, key=lambda s: s["doc_id"])
    expected = hand_scores(merged_dir, items[sample["doc"]["id"]])
    got = {pair: resp[0][0] for pair, resp in zip(wino.PAIRS, sample["resps"])}
    for pair in wino.PAIRS:
        assert abs(float(got[pair]) - expected[pair]) < 1e-4
    assert sample["text_score"] == wino.scores(expected)["text_score"]
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())["results"]
    assert set(results) >= {
        "winoground",
        "winoground_object",
        "winoground_relation",
        "winoground_both",
        "winoground_by_tag",
    }
    assert "group_score_stderr,none" in results["winoground"]
    # the reported scores are the means over items of the scores recomputed here from each item's four logged log-likelihoods
    by_hand = [wino.scores({pair: float(r[0][0]) for pair, r in zip(wino.PAIRS, s["resps"])}) for s in samples]
    for metric in ("text_score", "image_score", "group_score"):
        assert results["winoground"][f"{metric},none"] == pytest.approx(sum(h[metric] for h in by_hand) / len(by_hand))


def test_each_distinct_image_is_encoded_once(toy, data, monkeypatch):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from babymerge.lm_eval_model import BabyMergeLM

    lm = BabyMergeLM(pretrained=str(toy.mm), device="cpu")
    encoder, _ = lm.model.model.vision_encoder()
    calls = []
    encoder.register_forward_hook(lambda module, args, output: calls.append(args))
    monkeypatch.setenv("BABYMERGE_DATA", str(data))
    lm_eval.simple_evaluate(
        model=lm,
        tasks=["winoground"],
        task_manager=TaskManager(include_path=str(REPO / "lm_eval_tasks"), include_defaults=False),
    )
    assert len(calls) == lm.images_encoded == 12  # 6 items x 2 images, 24 requests


def test_filtered_rows_are_scored_like_the_babylm_pipeline(toy, data, tmp_path, monkeypatch):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from babymerge.lm_eval_model import BabyMergeLM

    rows = []
    for idx, item in enumerate(
        json.loads(line) for line in (data / "winoground" / "winoground.jsonl").read_text().splitlines()
    ):
        for key, (good, bad) in (("image_0", ("caption_0", "caption_1")), ("image_1", ("caption_1", "caption_0"))):
            rows.append({"id": f"{item['id']}_{key}", "caption_0": item[good], "caption_1": item[bad], "tag": item["tag"],
                         "collapsed_tag": item["collapsed_tag"], "num_main_preds": item["num_main_preds"], "image_idx": idx, "image_key": key})  # fmt: skip
    own = tmp_path / "evaluation_data"  # the shared fixture's images, this test's rows: nothing written into `data`
    (own / "winoground_filtered").mkdir(parents=True)
    (own / "winoground").symlink_to(data / "winoground")
    (own / "winoground_filtered" / "winoground.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("BABYMERGE_DATA", str(own))
    out = lm_eval.simple_evaluate(model=BabyMergeLM(pretrained=str(toy.mm), device="cpu"), tasks=["winoground_filtered", "winoground"],
                                  task_manager=TaskManager(include_path=str(REPO / "lm_eval_tasks"), include_defaults=False), log_samples=True)  # fmt: skip
    filtered = out["results"]["winoground_filtered"]
    assert len(out["samples"]["winoground_filtered"]) == 12
    # every filtered row is one image's text-score half: its accuracy is the mean of those halves,
    # the pipeline's (a tie right) and ours (a tie wrong)
    halves, strict_halves = [], []
    for s in out["samples"]["winoground"]:
        sc = {pair: r[0][0] for pair, r in zip(wino.PAIRS, s["resps"])}
        halves += [sc[0, 0] >= sc[1, 0], sc[1, 1] >= sc[0, 1]]
        strict_halves += [sc[0, 0] > sc[1, 0], sc[1, 1] > sc[0, 1]]
    assert filtered["acc_pipeline,none"] == pytest.approx(sum(halves) / len(halves))
    assert filtered["acc,none"] == pytest.approx(sum(strict_halves) / len(strict_halves))


def test_bad_input_is_named(data, tmp_path, monkeypatch):
    def broken(mutate):
        root = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        write_dataset(root / "winoground", n=3, seed=1)
        mutate(root / "winoground")
        return root / "winoground"

    missing = broken(lambda d: (d / "images" / "ex_1_img_0.png").unlink())
    with pytest.raises(BabyMergeError, match=r"item 1: image file .*ex_1_img_0.png does not exist"):
        wino.read_items(missing)
    unreadable = broken(lambda d: (d / "images" / "ex_2_img_1.png").write_bytes(b"not a png"))
    with pytest.raises(BabyMergeError, match=r"item 2: cannot read image .*ex_2_img_1.png"):
        wino.read_items(unreadable)

    def drop_caption(d):
        lines = (d / "winoground.jsonl").read_text().splitlines()
        row = json.loads(lines[1])
        row["caption_1"] = ""
        lines[1] = json.dumps(row)
        (d / "winoground.jsonl").write_text("\n".join(lines) + "\n")

    with pytest.raises(BabyMergeError, match=r"winoground.jsonl, line 2: Winoground item 1 has no caption_1"):
        wino.read_items(broken(drop_caption))
    monkeypatch.setenv("BABYMERGE_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(BabyMergeError, match=r"nowhere/winoground does not exist.*BABYMERGE_DATA.*facebook/winoground"):
        wino.load_winoground()


def test_synthetic_set_is_deterministic_and_in_the_hub_layout(tmp_path):
    a, b = write_dataset(tmp_path / "a", n=4, seed=3), write_dataset(tmp_path / "b", n=4, seed=3)
    assert (a / "winoground.jsonl").read_text() == (b / "winoground.jsonl").read_text()
    assert all((a / "images" / p.name).read_bytes() == p.read_bytes() for p in (b / "images").iterdir())
    row = json.loads((a / "winoground.jsonl").read_text().splitlines()[0])
    assert set(row) == {
        "id",
        "image_0",
        "image_1",
        "caption_0",
        "caption_1",
        "tag",
        "secondary_tag",
        "num_main_preds",
        "collapsed_tag",
    }
    assert sorted(row["caption_0"].split()) == sorted(row["caption_1"].split()) and row["caption_0"] != row["caption_1"]
    assert Image.open(a / row["image_0"]).size == (64, 64)
