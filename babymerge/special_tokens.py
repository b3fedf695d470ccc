"""BabyLLaVA's image token, in a module of its own: the model (``modeling.py``), the tokenizer
(``tokenization.py``) and training all need the string, and none should import another's
heavy module for it."""

IMAGE_TOKEN = "<image>"
