"""The web dashboard (``pip install conveyor[dashboard]``): queues, jobs, workers and
schedules, with retry, cancel, delete, pause and resume.

``app.mount("/jobs", conveyor_dashboard(queue, auth=DashboardAuth(token=...)))`` in your ASGI
app, or ``conveyor dashboard`` on its own.
"""

from __future__ import annotations

from conveyor.dashboard.app import conveyor_dashboard
from conveyor.dashboard.auth import DashboardAuth

__all__ = ["DashboardAuth", "conveyor_dashboard"]
