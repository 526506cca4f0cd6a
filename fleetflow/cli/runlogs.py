"""Prefect's flow and task run logs: in the Prefect UI always, on this terminal only with ``-v``.

A command that runs flows in its own process (``run``, ``cluster register``, ``init``, ``up``,
``demo``) prints its stages and results; the run logs ("Beginning flow run ...", "Finished in
state Completed()", retries and their tracebacks) are for the UI. Prefect's run loggers send to
its API handler and also propagate to the root logger's console handler; without ``-v`` they
stop propagating, so they still reach the API (and the UI) but not the terminal.

Only commands that print for a user do this. The platform's long-running processes (the
executor, ``watch``) keep Prefect's default, and their log files keep the run logs.
"""

from __future__ import annotations

import logging

RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


def configure(verbose: bool) -> None:
    """Set up Prefect's logging now (importing ``prefect.main`` does that once per process, and a
    later set-up would reset what is changed here), then keep run logs off the terminal unless
    ``verbose``."""
    import prefect.main  # noqa: F401  (configures Prefect's loggers from its settings)

    for name in RUN_LOGGERS:
        logging.getLogger(name).propagate = verbose
