"""The sandbox brought up once per test session (shared with other test modules through sandbox.testing)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox.testing import TEST_BASE_OCTET, TEST_STATE_DIR, SandboxHandle, running_sandbox


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxHandle]:
    """Both clusters, up for the whole session (probe delays scaled by 0.2)."""
    with running_sandbox(TEST_STATE_DIR, base_octet=TEST_BASE_OCTET) as handle:
        yield handle
