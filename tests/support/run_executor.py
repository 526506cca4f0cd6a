"""An executor for the test flow: ``python -m tests.support.run_executor NAME DEPLOYMENT N``."""

from __future__ import annotations

import logging
import sys

from fleetflow.executor.main import resolver, serve
from tests.support.executor_flows import record

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    name, deployment, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.exit(
        serve(
            name, resolver([record], deployment), concurrency=concurrency, poll_seconds=10, grace_seconds=30
        )
    )
