"""Fixtures of the bundle tests: one prepared workspace per bundle (phantom data, manifest, embedding store)."""

from __future__ import annotations

import pytest
from bundles.bundle_workspace import AVAILABLE, Workspace, make_workspace


@pytest.fixture(scope="module", params=AVAILABLE)
def workspace(request, tmp_path_factory) -> Workspace:
    return make_workspace(request.param, tmp_path_factory.mktemp(request.param))
