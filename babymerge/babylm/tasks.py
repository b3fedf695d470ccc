"""The BabyLM 2025 evaluation pipeline's zero-shot tasks as lm-eval tasks: names, data, scoring.

The official pipeline (``evaluation_pipeline/`` of babylm-evaluation-pipeline-2025) scores
each candidate of an item and picks the argmax. This module holds what our lm-eval tasks
(``lm_eval_tasks/babylm2025/``) and the 2025 submission file share with it:

* ``TASKS``: every lm-eval task name <-> (pipeline task, subtask, ``full`` | ``fast``), with
  the data file it reads under ``$BABYMERGE_DATA`` (the pipeline's ``evaluation_data/``
  layout: ``full_eval/...``, ``fast_eval/...``). The task and subtask are the keys of the
  pipeline's submission file (``collate_preds.py``), spelled as it spells them (BLiMP UIDs
  as in the data, EWoK domains with hyphens, ``regular_0_ops`` ...).
* ``FAST_REVISIONS``: the checkpoints fast evaluation covers, in the pipeline's order.
* ``pipeline_tokens``: which tokens the pipeline's ``causal`` backend scores for a candidate.
  A request whose extra argument dict has ``SCORING_KEY`` is scored that way by
  ``--model babymerge`` (``babymerge.lm_eval_model``).
* ``choose`` / ``pipeline_prediction``: the pipeline's argmax (a tie picks the first
  candidate, the right one) and the prediction entry it writes for an item.

Names: full tasks ``babylm2025_<task>_<subtask>``, fast ones ``babylm2025_fast_<task>_<subtask>``
(a task whose only subtask is itself repeats it: ``babylm2025_wug_adj_wug_adj``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import BabyMergeError

# Extra-argument key of a loglikelihood request scored the pipeline's way (see pipeline_tokens).
SCORING_KEY = "babylm2025_scoring"

# Checkpoint order of fast evaluation (collate_preds.py): the strict-small track stops at 100M
# words; the other tracks, the multimodal one included, go to 1000M.
STRICT_SMALL_FAST_REVISIONS = [f"chck_{i}M" for i in range(1, 10)] + [f"chck_{i * 10}M" for i in range(1, 11)]
FAST_REVISIONS = (
    [f"chck_{i}M" for i in range(1, 10)]
    + [f"chck_{i * 10}M" for i in range(1, 10)]
    + [f"chck_{i * 100}M" for i in range(1, 11)]
)

BLIMP_UIDS = (
    "adjunct_island anaphor_gender_agreement anaphor_number_agreement animate_subject_passive animate_subject_trans "
    "causative complex_NP_island coordinate_structure_constraint_complex_left_branch "
    "coordinate_structure_constraint_object_extraction determiner_noun_agreement_1 determiner_noun_agreement_2 "
    "determiner_noun_agreement_irregular_1 determiner_noun_agreement_irregular_2 determiner_noun_agreement_with_adj_2 "
    "determiner_noun_agreement_with_adj_irregular_1 determiner_noun_agreement_with_adj_irregular_2 "
    "determiner_noun_agreement_with_adjective_1 distractor_agreement_relational_noun "
    "distractor_agreement_relative_clause drop_argument ellipsis_n_bar_1 ellipsis_n_bar_2 "
    "existential_there_object_raising existential_there_quantifiers_1 existential_there_quantifiers_2 "
    "existential_there_subject_raising expletive_it_object_raising inchoative intransitive "
    "irregular_past_participle_adjectives irregular_past_participle_verbs irregular_plural_subject_verb_agreement_1 "
    "irregular_plural_subject_verb_agreement_2 left_branch_island_echo_question left_branch_island_simple_question "
    "matrix_question_npi_licensor_present npi_present_1 npi_present_2 only_npi_licensor_present only_npi_scope "
    "passive_1 passive_2 principle_A_c_command principle_A_case_1 principle_A_case_2 principle_A_domain_1 "
    "principle_A_domain_2 principle_A_domain_3 principle_A_reconstruction regular_plural_subject_verb_agreement_1 "
    "regular_plural_subject_verb_agreement_2 sentential_negation_npi_licensor_present sentential_negation_npi_scope "
    "sentential_subject_island superlative_quantifiers_1 superlative_quantifiers_2 tough_vs_raising_1 "
    "tough_vs_raising_2 transitive wh_island wh_questions_object_gap wh_questions_subject_gap "
    "wh_questions_subject_gap_long_distance wh_vs_that_no_gap wh_vs_that_no_gap_long_distance wh_vs_that_with_gap "
    "wh_vs_that_with_gap_long_distance"
).split()
SUPPLEMENT = ("hypernym", "qa_congruence_easy", "qa_congruence_tricky", "subject_aux_inversion", "turn_taking")
EWOK_DOMAINS = (
    "agent-properties",
    "material-dynamics",
    "material-properties",
    "physical-dynamics",
    "physical-interactions",
    "physical-relations",
    "quantitative-properties",
    "social-interactions",
    "social-properties",
    "social-relations",
    "spatial-relations",
)
ENTITY_TRACKING_SPLITS = ("regular", "ambiref", "move_contents")  # one file each; subtasks <split>_<numops>_ops
ENTITY_TRACKING_OPS = range(6)
# COMPS subtask -> file stem (read_files.decode_comps; calculate_results_from_pred.py names the last file)
COMPS_FILES = {
    "base": "comps_base",
    "wugs": "comps_wugs",
    "wugs_dist_before": "comps_wugs_dist-before",
    "wugs_dist_in_between": "comps_wugs_dist-in-between",
}

# (pipeline task, full|fast) -> data folder under $BABYMERGE_DATA (eval_zero_shot[_fast].sh, collate_preds.py)
FOLDERS = {
    ("blimp", "full"): "full_eval/blimp_filtered",
    ("blimp", "fast"): "fast_eval/blimp_fast",
    ("blimp_supplement", "full"): "full_eval/supplement_filtered",
    ("blimp_supplement", "fast"): "fast_eval/supplement_fast",
    ("ewok", "full"): "full_eval/ewok_filtered",
    ("ewok", "fast"): "fast_eval/ewok_fast",
    ("entity_tracking", "full"): "full_eval/entity_tracking",
    ("entity_tracking", "fast"): "fast_eval/entity_tracking_fast",
    ("wug_adj", "full"): "full_eval/wug_adj_nominalization",
    ("wug_adj", "fast"): "fast_eval/wug_adj_nominalization",
    ("wug_past", "full"): "full_eval/wug_past_tense",
    ("wug_past", "fast"): "fast_eval/wug_past_tense",
    ("comps", "full"): "full_eval/comps",
}


@dataclass(frozen=True)
class Entry:
    """One lm-eval task: a subtask of a pipeline task, full or fast.

    ``reader`` is the pipeline's ``--task`` value, which decides how a data line becomes
    candidates (``read_files.decode``); ``folder``/``file`` locate the data under
    ``$BABYMERGE_DATA``. Entries other engineers add (VQA, reading) may leave them empty.
    """

    name: str
    task: str
    subtask: str
    kind: str  # "full" or "fast"
    reader: str = ""
    folder: str = ""
    file: str = ""


def task_name(task: str, subtask: str, kind: str) -> str:
    return f"babylm2025_{'fast_' if kind == 'fast' else ''}{task}_{subtask}"


def _text_entries() -> list[Entry]:
    rows = []  # (task, subtask, kind, reader, file)
    for kind in ("full", "fast"):
        rows += [("blimp", uid, kind, "blimp", uid) for uid in BLIMP_UIDS]
        rows += [("blimp_supplement", name, kind, "blimp", name) for name in SUPPLEMENT]
        rows += [("ewok", domain, kind, "ewok", domain) for domain in EWOK_DOMAINS]
        splits = ENTITY_TRACKING_SPLITS if kind == "full" else ("regular",)
        rows += [
            ("entity_tracking", f"{s}_{n}_ops", kind, "entity_tracking", s) for s in splits for n in ENTITY_TRACKING_OPS
        ]
        rows += [("wug_adj", "wug_adj", kind, "wug_adj", "wug_adj_nominalization")]
        rows += [("wug_past", "wug_past", kind, "wug_past", "wug_past_tense")]
    rows += [("comps", subtask, "full", "comps", stem) for subtask, stem in COMPS_FILES.items()]
    return [Entry(task_name(t, s, k), t, s, k, reader, FOLDERS[t, k], file) for t, s, k, reader, file in rows]


# Every 2025 lm-eval task, by name: the text zero-shot tasks (lm_eval_tasks/babylm2025/), then
# VQA and reading (lm_eval_tasks/babylm2025/vqa/, reading/: data read by their own loaders).
TASKS: dict[str, Entry] = {e.name: e for e in _text_entries()}
for _entry in (
    Entry(task_name("vqa", "vqa", "full"), "vqa", "vqa", "full"),
    Entry(task_name("reading", "reading", "full"), "reading", "reading", "full"),
    Entry(task_name("reading", "reading", "fast"), "reading", "reading", "fast"),
):
    TASKS[_entry.name] = _entry


def lookup(task: str, subtask: str, kind: str) -> Entry:
    """The entry of (pipeline task, subtask, full|fast)."""
    name = task_name(task, subtask, kind)
    if name not in TASKS:
        raise BabyMergeError(
            f"no BabyLM 2025 {kind} task {task}/{subtask} (lm-eval task {name}); see babymerge.babylm2025.TASKS"
        )
    return TASKS[name]


# -- scoring ------------------------------------------------------------------------------------
def pipeline_tokens(tokenizer, context: str, continuation: str) -> tuple[list[int], int]:
    """The tokens of one candidate and how many at their end the 2025 pipeline scores.

    The pipeline's ``causal`` backend (``sentence_zero_shot/dataset.py``) tokenises the whole
    candidate sentence, here ``context + continuation``, with the tokenizer's default special
    tokens, feeds ``tokens[:-1]`` and predicts ``tokens[1:]``: the first token is never scored.
    A later token is scored when its character span ends after the completion's start,
    ``len(context)`` plus the first token's start offset, as the pipeline computes it. So
    whitespace and BOS are whatever the tokenizer makes of the full text, unlike lm-eval's
    ``(context, continuation)`` split, and a token straddling the boundary counts.

    Returns ``(tokens up to the last scored one, number of scored tokens)``; nothing after the
    last scored token (e.g. an EOS the tokenizer appends) affects the score. Needs a fast
    tokenizer (offsets).
    """
    text = context + continuation
    encoding = tokenizer(text=text, return_offsets_mapping=True)  # a processor too, called as the pipeline calls it
    ids, offsets = list(encoding["input_ids"]), encoding["offset_mapping"]
    if not ids:
        raise BabyMergeError(f"the tokenizer gives no tokens for {text!r}")
    start = len(context) + offsets[0][0]
    scored = [i for i in range(1, len(ids)) if offsets[i][1] > start]
    if not scored:
        return ids, 0
    if scored != list(range(scored[0], scored[-1] + 1)):
        raise BabyMergeError(
            f"the scored tokens of {text!r} are not contiguous (offsets {offsets}); unsupported tokenizer"
        )
    return ids[: scored[-1] + 1], len(scored)


def choose(loglikelihoods) -> int:
    """The pipeline's prediction: the candidate of highest summed log-probability, the first
    one on a tie (``torch.max``'s rule), so a tie counts as right: the right one is first."""
    scores = list(loglikelihoods)
    return scores.index(max(scores))


def first_probability(loglikelihoods) -> float:
    """The wug tasks' model ratio: softmax over the candidates' log-likelihoods, the first one's
    share, in float32 as the pipeline computes it (``rank_and_evaluate_wug``). Far-apart
    candidates give exactly 1.0 or 0.0 there, and those ties change Spearman's rho."""
    return float(torch.tensor(list(loglikelihoods), dtype=torch.float32).softmax(0)[0])


def pipeline_prediction(doc: dict, loglikelihoods) -> dict:
    """What the pipeline writes for one item (without its ``id``): ``pred``, the chosen
    candidate's text as the pipeline reports it (``doc["preds"]``: the completion, or the whole
    sentence for COMPS), and for the wug tasks ``prob``."""
    prediction = {"pred": doc["preds"][choose(loglikelihoods)]}
    if "ratio" in doc:
        prediction["prob"] = first_probability(loglikelihoods)
    return prediction
