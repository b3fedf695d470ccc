"""Training BabyLLaVA and its language-only twin from scratch, as the paper did.

    python -m train.tokenizer --data data/babylm --vocab-size 32768 --out tokenizer
    python -m train.encode_images --captions data/images.jsonl --out features/   # if you have images, not features
    deepspeed --num_gpus 2 --module train --config train/configs/multimodal.yaml
    deepspeed --num_gpus 2 --module train --config train/configs/language_only.yaml

One module per concern: ``config`` (the YAML schema), ``tokenizer``, ``encode_images``,
``data`` (corpora -> packed, cached blocks), ``model`` (the random init), ``engine``
(DeepSpeed ZeRO or plain PyTorch), ``checkpointing`` (publish / resume), ``loop``.
The checkpoints it writes are Hugging Face directories that ``babymerge merge`` and
``lm_eval --model babymerge`` read directly.
"""
