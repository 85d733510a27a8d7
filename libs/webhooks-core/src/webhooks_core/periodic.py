"""Work a process repeats in the background: a daemon thread, an interval and a stop event.

The scheduler keeps house this way (resealing secrets under the newest key, retention).  A run
that raises is logged and tried again at the next interval: the work is worth repeating, and
a thread ended by one database hiccup would stop it, silently, for the life of the process.
The thread is a daemon so that it never holds a process that is stopping; setting the stop
event ends it at its next wait.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable


def repeat(
    work: Callable[[], object],
    interval: float,
    stop: threading.Event,
    *,
    logger: logging.Logger,
    what: str,
    at_start: bool,
) -> None:
    """Call ``work`` every ``interval`` seconds until ``stop`` is set.

    ``at_start`` runs it once at once instead of after the first interval.  A failure is
    logged on ``logger`` as ``what`` failed, and the next run comes at the next interval.
    """
    if not at_start and stop.wait(interval):
        return
    while True:
        try:
            work()
        except Exception:
            logger.exception("%s failed; next try in %.0f s", what, interval)
        if stop.wait(interval):
            return


def start_periodic(
    work: Callable[[], object],
    interval: float,
    *,
    name: str,
    logger: logging.Logger,
    what: str,
    at_start: bool,
) -> threading.Event | None:
    """A daemon thread ``name`` that :func:`repeat`\\ s ``work``; its stop (None when 0: off)."""
    if not interval:
        return None
    stop = threading.Event()
    thread = threading.Thread(
        target=repeat,
        args=(work, interval, stop),
        kwargs={"logger": logger, "what": what, "at_start": at_start},
        name=name,
        daemon=True,
    )
    thread.start()
    return stop
