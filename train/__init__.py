"""Training BabyLLaVA and its language-only twin with the DeepSpeed launcher (issue: train/).

Not implemented yet: checkpoints for babymerge can meanwhile be built with ``babymerge.toy``
or converted from any Hugging Face Llava/Llama training run.
"""
