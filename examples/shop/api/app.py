"""The API service: ``uvicorn examples.shop.api.app:app``, configured from the environment
(``examples/shop/settings.py``); tests build their own with :func:`create_app`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from conveyor import Queue
from conveyor.dashboard import DashboardAuth, conveyor_dashboard
from conveyor.fastapi import conveyor_lifespan
from examples.shop.api.routes import router
from examples.shop.models import Database
from examples.shop.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    database = Database(settings.database_url)
    # The queue lives in the same database, so that endpoints enqueue in their transactions.
    queue = Queue.from_url(settings.conveyor_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncGenerator[None]:
        # Runs inside conveyor_lifespan, so the queue is open (on SQLite its tables exist and
        # the file is in WAL mode) before the first transaction writes into the same database.
        await database.create_tables()
        yield
        await database.dispose()

    app = FastAPI(title="shop", lifespan=conveyor_lifespan(queue, lifespan))
    app.state.database = database  # for the endpoints' sessions (routes.get_session)
    app.include_router(router)
    # The dashboard beside the API. Without a token it serves loopback clients only.
    auth = DashboardAuth(token=settings.dashboard_token) if settings.dashboard_token else None
    app.mount("/jobs", conveyor_dashboard(queue, auth=auth))
    return app


app = create_app(Settings.from_env())
