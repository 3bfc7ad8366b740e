"""``python -m monai_ng.cli COMMAND ...`` (and ``torchrun -m monai_ng.cli embed ...``): the ``monai-ng`` command."""

from __future__ import annotations

import sys

from monai_ng.cli import main

sys.exit(main())
