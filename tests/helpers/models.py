"""Tiny models, and checkpoint weights read and merged by hand, independently of babymerge."""

from pathlib import Path

import torch
from safetensors.torch import load_file
from tokenizers import processors
from transformers import LlamaConfig, LlamaForCausalLM

from demo.toy import toy_text_config

LANG_PREFIX = ("model.language_model.", "model.")
# 3 layers of hidden 1024 and MLP 4096 with an 8192-token vocabulary: 63M parameters, 252 MB
# in float32. A merge of two takes a few tenths of a second: long enough to stop it mid-read.
LARGE_CONFIG = toy_text_config(8192, hidden_size=1024, num_layers=3, intermediate_size=4096, heads=8)


def weights(path):
    """All tensors of a checkpoint directory (sharded or not), independently of babymerge."""
    out = {}
    for file in sorted(path.glob("*.safetensors")):
        out.update(load_file(file))
    return out


def weights_bytes(path) -> int:
    """Size of a checkpoint's weight files."""
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


def as_llama_name(key):
    """A multimodal checkpoint's language-model tensor name as the LlamaForCausalLM twin names it."""
    return key.replace(*LANG_PREFIX) if key.startswith(LANG_PREFIX[0]) else key


def interpolated(mm, lang, alpha):
    """The linear merge by hand, in float64: mm + a * (lang - mm), or lang - (1 - a) * (lang - mm)
    for a >= 0.5, with a = float32(alpha), the difference rounded to float32 and the
    multiply-add rounded once to float32, as a fused multiply-add rounds it (float64 holds the
    product of two float32 exactly; rounding its sum twice differs from once only at halfway
    cases, about one entry in 2^29 of random data). Returns float32."""
    a = float(torch.tensor(alpha, dtype=torch.float32))
    m, l = mm.float(), lang.float()
    difference = (l - m).double()
    if a < 0.5:
        return (m.double() + a * difference).float()
    return (l.double() - (1 - a) * difference).float()


def build_model(path: Path, tokenizer, bos: bool) -> Path:
    """A tiny random LlamaForCausalLM, peaked enough (init std 0.5) that candidates rarely come close."""
    if bos:  # what Llama-style tokenizers do: BOS in front of every text
        tokenizer.backend_tokenizer.post_processor = processors.Sequence(
            [
                processors.ByteLevel(trim_offsets=False),
                processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tokenizer.bos_token_id)]),
            ]
        )
    torch.manual_seed(0)
    config = LlamaConfig(**toy_text_config(len(tokenizer), hidden_size=32, num_layers=2), initializer_range=0.5)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
