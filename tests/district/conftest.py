"""One NATS cluster for the district tests (starting three nodes takes 6 s a test), stopped after them, not left
running under the rest of the suite and its timing tests (a login timing test failed in the one run that had it).
Each test gets it whole and ready (a node a test killed or stopped is started again first), its own consumers
(deleted after it) and its own schools (their site ids prefixed per test), so nothing of one test reaches
another's records."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.district.harness import NatsCluster


@pytest.fixture(scope="package")
def shared_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    nats = NatsCluster(tmp_path_factory.mktemp("nats"))
    try:
        nats.start()
        yield nats
    finally:
        nats.stop()
