"""Registers BabyLLaVA with transformers' Auto classes (``AutoConfig``, ``AutoModel``,
``AutoModelForCausalLM``, ``AutoModelForImageTextToText``).

As transformers keeps its Auto mappings apart from the model files, this module is the
only one that imports both ``configuration`` and ``modeling``; neither imports the other's
registration, and neither is imported back. It is not copied into checkpoints: there
``auto_map`` in config.json names the classes (``remote_code.py``). ``import babymerge``
imports it once transformers is imported (see ``babymerge/__init__.py``).
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText

from .configuration import BabyLlavaConfig
from .modeling import BabyLlavaForConditionalGeneration, BabyLlavaModel

AutoConfig.register(BabyLlavaConfig.model_type, BabyLlavaConfig, exist_ok=True)
AutoModel.register(BabyLlavaConfig, BabyLlavaModel, exist_ok=True)
AutoModelForImageTextToText.register(BabyLlavaConfig, BabyLlavaForConditionalGeneration, exist_ok=True)
AutoModelForCausalLM.register(BabyLlavaConfig, BabyLlavaForConditionalGeneration, exist_ok=True)
