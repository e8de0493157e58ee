"""The Redis/Valkey backend: the production broker; see :mod:`.driver`."""

from conveyor.backends.redis.driver import RedisDriver

__all__ = ["RedisDriver"]
