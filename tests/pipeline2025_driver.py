"""Run the official BabyLM 2025 pipeline, unmodified, several times in one process; record what it computed.

    PYTHONPATH=<babylm-evaluation-pipeline-2025> python pipeline2025_driver.py runs.json out.json

``runs.json``: a list of {"key", "argv"} (arguments of ``evaluation_pipeline.sentence_zero_shot.run``),
optionally "collate": [function name, *arguments] of ``collate_preds`` to apply to the run's
predictions (the fast scores of the submission file). The pipeline's functions are wrapped, not
changed: the wrappers record the per-item summed log-probabilities that ``rank_and_evaluate``
receives and the accuracies ``process_results`` returns, then call the originals. Also records
collate_preds' constants (checkpoint order, subtask names) for the tests to compare with.
"""

import json
import sys
from pathlib import Path

import evaluation_pipeline.collate_preds as collate
import evaluation_pipeline.sentence_zero_shot.compute_results as compute
import evaluation_pipeline.sentence_zero_shot.run as run
import torch

record = {}


def spy_rank(original):
    def wrapper(args, subset_to_stats, all_log_probs, raw_sentences, labels, metadatas, uids, predictions):
        (columns,) = all_log_probs.values()  # one temperature: 1.0
        for uid, row in zip(uids, torch.stack(columns, dim=1).tolist()):
            record["items"].append([uid, row])
        return original(args, subset_to_stats, all_log_probs, raw_sentences, labels, metadatas, uids, predictions)

    return wrapper


def spy_results(original):
    def wrapper(*args):
        accuracies, averages = original(*args)
        (record["accuracies"],), (record["average"],) = accuracies.values(), averages.values()
        return accuracies, averages

    return wrapper


compute.rank_and_evaluate = spy_rank(compute.rank_and_evaluate)
compute.rank_and_evaluate_wug = spy_rank(compute.rank_and_evaluate_wug)
run.process_results = spy_results(run.process_results)
run.process_results_wug = spy_results(run.process_results_wug)

runs_file, out_file = map(Path, sys.argv[1:3])
runs, out = json.loads(runs_file.read_text()), {}
for spec in runs:
    record = {"items": []}
    sys.argv = ["run", *spec["argv"]]
    run.main()
    opt = dict(zip(spec["argv"][::2], spec["argv"][1::2]))
    path = Path(opt["--output_dir"]) / Path(opt["--model_path_or_name"]).stem / "main" / "zero_shot" / "causal"
    record["predictions"] = json.loads(
        (path / opt["--task"] / Path(opt["--data_path"]).stem / "predictions.json").read_text()
    )
    if spec.get("collate"):
        name, *arguments = spec["collate"]
        arguments = [Path(a) if "/" in a else a for a in arguments]
        record["collate"] = getattr(collate, f"_calculate_{name}_results")(record["predictions"], *arguments)
    out[spec["key"]] = record
out["constants"] = {
    "FAST_REVISIONS": collate.OTHER_FAST_REVISIONS,
    "STRICT_SMALL_FAST_REVISIONS": collate.STRICT_SMALL_FAST_REVISIONS,
    "FULL_SIZES": {k: sorted(v) for k, v in collate.FULL_SIZES.items() if isinstance(v, dict)},
    "FAST_ENTITY_TRACKING": sorted(collate.ENTITY_TRACKING_FAST_SIZE),
}
out_file.write_text(json.dumps(out))
