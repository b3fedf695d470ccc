"""``python -m babymerge.eval ...``: the ``lm_eval`` command with ``--model babymerge`` registered.

Equivalent to the plain ``lm_eval`` executable (which finds the model through the start-up
hook that ``pip install`` adds); useful where that hook is absent, e.g. when running from a
source checkout on ``PYTHONPATH`` without installing. All arguments are lm-eval's:

    python -m babymerge.eval --model babymerge --model_args pretrained=A,lang_ckpt=B,alpha=0.3 \\
        --tasks blimp --include_path lm_eval_tasks
"""

import sys

from lm_eval.__main__ import cli_evaluate

from _babymerge_hooks import register_lm_eval_model


def main() -> None:
    import lm_eval.models  # noqa: F401  (fill lm-eval's registry first, then add ours)

    register_lm_eval_model()
    cli_evaluate()


if __name__ == "__main__":
    sys.exit(main())
