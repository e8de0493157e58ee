"""The worker process: ``conveyor worker examples.shop.worker.app:worker``.

Configured from the environment (see ``examples/shop/settings.py``), like the API.
"""

from __future__ import annotations

from conveyor import Queue
from examples.shop.models import Database
from examples.shop.settings import Settings
from examples.shop.worker.handlers import Handlers, build_worker
from examples.shop.worker.mail import Mailer

settings = Settings.from_env()
database = Database(settings.database_url)
handlers = Handlers(
    database.sessions, Mailer(settings.smtp_host, settings.smtp_port, settings.mail_from)
)
worker = build_worker(
    Queue.from_url(settings.conveyor_url),
    handlers,
    session_cleanup_every=settings.session_cleanup_every,
)
