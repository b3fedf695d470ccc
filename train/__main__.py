"""``deepspeed --num_gpus 2 --module train --config train/configs/multimodal.yaml`` (or ``python -m train``)."""

import sys

from .loop import main

sys.exit(main())
