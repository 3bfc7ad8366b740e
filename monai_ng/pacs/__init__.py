"""Exchange with a hospital PACS: pull CT studies and push result documents back over DICOMweb.

The package's public names are those of :mod:`monai_ng.pacs.dicomweb` (its ``__all__``).
"""

from __future__ import annotations

from .dicomweb import *  # noqa: F403
from .dicomweb import __all__ as __all__
