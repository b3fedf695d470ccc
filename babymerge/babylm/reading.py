"""BabyLM 2025 reading: the ΔR² scores ``collate_preds.py`` reports (``_calculate_reading_results``).

Does a model's surprisal explain human reading times beyond word frequency and length? Per word of
``reading_data.csv``: ``pred`` = the word's surprisal, ``prev_pred`` the previous word's. ``rt`` is
the mean over the four eye-tracking measures, ``spr`` self-paced reading with one word of spill-over.
The lm-eval reading tasks (``lm_eval_tasks/babylm2025/reading/``) and the 2025 submission's fast
scores (``submission2025``) both compute them here.
"""

from __future__ import annotations

EYE_TRACKING = ("RTfirstfix", "RTfirstpass", "RTgopast", "RTrightbound")
COVARIATES = ("Subtlex_log10", "length", "context_length")
SPILLOVER_COVARIATES = (*COVARIATES, "prev_length", "prev_pred")
READING_COLUMNS = (*EYE_TRACKING, "self_paced_reading_time", *COVARIATES, "prev_length")  # what the CSV must give


def _delta_r2(frame, dv: str, covariates: tuple[str, ...]) -> float:
    """(R²(baseline + pred) - R²(baseline)) / (1 - R²(baseline)); the baseline is the covariates and all
    their pairwise interactions, each model fitted (OLS) on the rows where its own variables are known."""
    import statsmodels.formula.api as smf

    baseline = f"{dv} ~ ({' + '.join(covariates)})**2"
    r2_baseline = smf.ols(baseline, data=frame[[dv, *covariates]].dropna()).fit().rsquared
    r2_model = smf.ols(baseline + " + pred", data=frame[[dv, *covariates, "pred"]].dropna()).fit().rsquared
    return float((r2_model - r2_baseline) / (1 - r2_baseline))


def reading_scores(frame) -> dict[str, float]:
    """``{"spr": ..., "rt": ...}`` from a frame with the CSV's columns plus ``pred`` and ``prev_pred``
    (surprisals): self-paced reading with one word of spill-over, and the mean over the eye-tracking
    measures."""
    rt = [_delta_r2(frame, dv, COVARIATES) for dv in EYE_TRACKING]
    return {"spr": _delta_r2(frame, "self_paced_reading_time", SPILLOVER_COVARIATES), "rt": sum(rt) / len(rt)}
