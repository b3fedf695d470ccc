"""babymerge: merge a BabyLM vision-language model with its language-only twin.

``import babymerge`` registers BabyLLaVA with the transformers Auto classes, so
``AutoConfig`` / ``AutoModelForImageTextToText`` / ``AutoModelForCausalLM`` ``.from_pretrained``
load our checkpoints like any other.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText

from .configuration import BabyLlavaConfig
from .errors import BabyMergeError
from .modeling import BabyLlavaForConditionalGeneration, BabyLlavaModel

AutoConfig.register(BabyLlavaConfig.model_type, BabyLlavaConfig, exist_ok=True)
AutoModel.register(BabyLlavaConfig, BabyLlavaModel, exist_ok=True)
AutoModelForImageTextToText.register(BabyLlavaConfig, BabyLlavaForConditionalGeneration, exist_ok=True)
AutoModelForCausalLM.register(BabyLlavaConfig, BabyLlavaForConditionalGeneration, exist_ok=True)

from .merge import merge  # noqa: E402  (needs the registrations above)

__version__ = "0.1.0"
__all__ = [
    "BabyLlavaConfig",
    "BabyLlavaForConditionalGeneration",
    "BabyLlavaModel",
    "BabyMergeError",
    "merge",
]
