"""``python -m monai_ng`` is the same as the ``monai-ng`` console script."""

from __future__ import annotations

import sys

from monai_ng.cli import main

sys.exit(main())
