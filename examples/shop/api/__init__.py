"""The API service: ``uvicorn examples.shop.api.app:app``."""
