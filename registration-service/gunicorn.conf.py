"""gunicorn settings of the registration API: `gunicorn -c registration-service/gunicorn.conf.py`.

Metrics of all workers add up: each worker counts in its own files under
``PROMETHEUS_MULTIPROC_DIR`` (set by the Procfile and the Dockerfile); the master empties the
directory at start and forgets a dead worker's live gauges.  Access and error lines go through
the platform's structured logging (JSON in containers, colour on a terminal).

Workers are threaded (``gthread``) and keep client connections alive between requests: a
synchronous worker closes the connection after every response, so each request paid a TCP
handshake and could not overlap its database round trips with another request's Python work.
The Procfile, the Dockerfile and the benchmark all read these settings from this file; each
thread needs a pooled database connection (``WEBHOOKS_DATABASE_POOL_SIZE``, 10 by default).

Each worker freezes what it built at start (``post_worker_init``), as the delivery worker
does: a full collection then walks only what requests allocate, instead of the ~100,000
objects of the modules and the app (about 100 ms on the benchmark's machine, every thread
stopped, landing on whichever request triggered it).
"""

import gc
from typing import Any

from registration.config import APISettings
from webhooks_core.logging import logging_config
from webhooks_core.monitoring import gunicorn_child_exit, gunicorn_on_starting

_settings = APISettings.from_env()  # a missing URL stops the master at start

wsgi_app = "registration.app:create_app()"
on_starting = gunicorn_on_starting
child_exit = gunicorn_child_exit
worker_class = "gthread"
threads = 8
keepalive = 30  # seconds an idle client connection stays open
control_socket_disable = True  # several gunicorns may share a host
limit_request_line = 8190  # the most gunicorn allows; the API refuses over 4096 (problems.py)
logconfig_dict = logging_config(
    "registration", log_format=_settings.log_format, level=_settings.log_level
)


def post_worker_init(worker: Any) -> None:
    """After the worker loaded the app: its startup objects out of the collector's sight."""
    gc.collect()
    gc.freeze()
