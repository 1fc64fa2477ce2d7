"""``python -m d4lenspinn`` (and ``torchrun -m d4lenspinn``) runs the command line."""

import sys

from .cli import main

sys.exit(main())
