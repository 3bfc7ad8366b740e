"""Fixtures for the tests of ``monai_ng.pacs``: a real Orthanc PACS with DICOMweb on 127.0.0.1 (see
``orthanc_server.py``), shared by the session. Skipped, with the reason, when Orthanc is not installed; a failure
instead when ``MONAI_NG_REQUIRE_ORTHANC=1`` (for CI).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pacs.orthanc_server import OrthancServer, OrthancUnavailable, find_orthanc, running_orthanc


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """A running Orthanc with DICOMweb (free port, temporary storage, local access only), stopped after the session."""
    try:
        find_orthanc()
    except OrthancUnavailable as exc:
        if os.environ.get("MONAI_NG_REQUIRE_ORTHANC") == "1":  # CI sets this: a missing PACS is then a failure
            pytest.fail(f"MONAI_NG_REQUIRE_ORTHANC=1 but {exc}", pytrace=False)
        pytest.skip(str(exc))
    try:
        with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
            yield server
    except RuntimeError as exc:
        if "Orthanc" not in str(exc):
            raise
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(autouse=True)
def _orthanc_log_tail_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """For a failed test that used ``orthanc``, put the server's log tail into the report (captured stdout)."""
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed and "orthanc" in request.fixturenames:
        print(f"--- Orthanc log tail ---\n{request.getfixturevalue('orthanc').log_tail()}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Keep each phase's report on the test item, for ``_orthanc_log_tail_on_failure``."""
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep
