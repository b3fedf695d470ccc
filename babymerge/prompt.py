"""The one prompt format: ``"<image> " + text``, as the paper's authors wrote it.

Every path that turns text into BabyLLaVA input goes through ``image_prompt``: training
(captions, and each language-only segment, which follows the black image), the lm-eval
adapter's text requests with the black image, and the processor that the official BabyLM
2025 pipeline calls (``processing.py``). The authors' evaluation code builds every prompt,
text-only tasks included, as ``"<image> " + sentence``; with a byte-level BPE the ``<image>``
special token is split off and the sentence's first word is encoded with its leading space
(``ĠThe``), exactly as lm-eval's convention ``" " + sentence`` after the image token gives.

A **text pair** (a GLUE premise and hypothesis, question and passage) is shown as training
shows two consecutive text segments: ``"<image> " + first``, ``</s>``, then ``" " + second``
(``pair_prompt``). Training packs language-only text as ``<image>`` (the black image), then
each segment with its leading space followed by ``</s>``; the pair is the first two segments of
such a block, without the second's ``</s>``, as a single text has none.

This file is copied beside the weights of every checkpoint, so it imports nothing.
"""

IMAGE_TOKEN = "<image>"


def image_prompt(text: str) -> str:
    """``"<image> " + text``. A text that already starts with a space (lm-eval's continuation
    convention, ``" " + sentence``) is not given a second one, so both conventions give the
    same tokens."""
    return IMAGE_TOKEN + (text if text.startswith(" ") else " " + text)


def prompt_body(text: str) -> str:
    """The part of ``image_prompt(text)`` after the image token: what follows the image."""
    return image_prompt(text)[len(IMAGE_TOKEN) :]


def pair_prompt(first: str, second: str, eos: str) -> tuple[str, str]:
    """A text pair as two consecutive training segments: ``image_prompt(first) + eos`` and
    ``prompt_body(second)`` (``eos``: the tokenizer's ``</s>``, the segment separator)."""
    return image_prompt(first) + eos, prompt_body(second)
