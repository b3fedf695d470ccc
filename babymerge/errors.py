"""The one exception type babymerge raises for bad input.

Every message says what is wrong, where (file, tensor, argument) and how to fix it, so a
researcher can act on it without reading our code. It subclasses ``ValueError`` so callers
that already catch ``ValueError`` keep working.
"""


class BabyMergeError(ValueError):
    """Bad input to babymerge: a checkpoint, an argument or a data file we cannot use."""
