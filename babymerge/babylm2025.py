"""What ``babymerge.lm_eval_model`` imports from here; the BabyLM contract lives in ``babymerge.babylm``."""

from .babylm.scoring import SCORING_KEY, pipeline_tokens

__all__ = ["SCORING_KEY", "pipeline_tokens"]
