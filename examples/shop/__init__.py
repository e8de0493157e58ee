"""A complete service on Conveyor: a FastAPI API and a worker sharing a ``jobs`` package."""
