"""gunicorn settings of the people demo producer: `gunicorn -c event-producer/gunicorn.conf.py`.

One worker with threads, so its Prometheus metrics live in one process (no multiprocess
directory needed); access and error lines go through the platform's structured logging.
A request spends most of its time waiting for PostgreSQL (its commit, then the round trips),
so threads, not processes, add throughput; the app's pool holds a connection per thread.
"""

from producer.config import ProducerSettings
from webhooks_core.logging import logging_config

_settings = ProducerSettings.from_env()  # a missing URL stops the master at start

wsgi_app = "producer.app:create_app()"
bind = "127.0.0.1:8001"
workers = 1
threads = 16
accesslog = "-"
control_socket_disable = True  # several gunicorns may share a host
logconfig_dict = logging_config(
    "producer", log_format=_settings.log_format, level=_settings.log_level
)
