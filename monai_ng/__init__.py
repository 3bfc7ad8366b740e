"""monai_ng: Normal Guidance attention-MIL for CT slice localization, built on MONAI.

Method: E. Harvey, D. J. Loevlie, M. C. Hughes, "Normal Guidance is what Attention Needs" (2026).
"""

from __future__ import annotations

__version__ = "0.1.0"
