"""The BabyLM pipelines' tasks and subtasks, and the 2025 table of our lm-eval tasks.

The subtask lists are spelled as the pipelines' data and submission files spell them (BLiMP
UIDs as in the data, EWoK domains with hyphens, ``regular_0_ops`` ...); the 2024 submission,
the lm-eval task YAMLs (``lm_eval_tasks/*/generate.py``) and the demo data read them here.

``TASKS``: every 2025 lm-eval task name <-> (pipeline task, subtask, ``full`` | ``fast``), with
the data file it reads under ``$BABYMERGE_DATA`` (the pipeline's ``evaluation_data/`` layout:
``full_eval/...``, ``fast_eval/...``). The task and subtask are the keys of the 2025 pipeline's
submission file (``collate_preds.py``). Names: full tasks ``babylm2025_<task>_<subtask>``, fast
ones ``babylm2025_fast_<task>_<subtask>`` (a task whose only subtask is itself repeats it:
``babylm2025_wug_adj_wug_adj``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BabyMergeError

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
# GLUE (fine-tuning, done outside this project): the 2024 pipeline's tasks, then the 2025 one's
GLUE_2024 = ("cola", "sst2", "mrpc", "qqp", "mnli", "mnli-mm", "qnli", "rte", "boolq", "multirc", "wsc")
GLUE_2025 = ("boolq", "mnli", "mrpc", "multirc", "qqp", "rte", "wsc")
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
            f"no BabyLM 2025 {kind} task {task}/{subtask} (lm-eval task {name}); see babymerge.babylm.tasks.TASKS"
        )
    return TASKS[name]
