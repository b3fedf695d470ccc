"""mergekit recipes (github.com/arcee-ai/mergekit): read one as a babymerge merge
(``reader``: ``babymerge merge --config``, lm-eval's ``mergekit_config=``), or write a babymerge
merge as one (``writer``: ``babymerge merge --mergekit-yaml``)."""

from __future__ import annotations

from collections.abc import Mapping

from ...errors import BabyMergeError
from .reader import MergekitRecipe, read_mergekit_config
from .writer import mergekit_config, write_mergekit_yaml

__all__ = ["MergekitRecipe", "check_recipe_alone", "mergekit_config", "read_mergekit_config", "write_mergekit_yaml"]


def check_recipe_alone(recipe_argument: str, given: Mapping[str, object]) -> None:
    """A recipe is the whole merge (models, method, weights, options): refuse merge arguments
    given beside it. ``given`` maps each such argument, as the caller names it, to its value
    (None, empty or False: not given)."""
    beside = [
        name for name, value in given.items() if value is not None and value is not False and value not in ("", [], {})
    ]
    if beside:
        raise BabyMergeError(f"{recipe_argument} is the whole recipe: give {', '.join(beside)} in it, not beside it")
