"""The PostgreSQL backend (``postgresql://`` URLs); needs ``pip install 'conveyor[postgres]'``."""

from conveyor.backends.postgres.driver import PostgresDriver

__all__ = ["PostgresDriver"]
