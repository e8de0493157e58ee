-- Conveyor schema for SQLite: rate limits.

-- Each rate-limited queue's sliding log (see conveyor.drivers.rates): the start times of its
-- last starts, oldest first, as a JSON array of at most the limit's count; and the time a
-- handler's RateLimited blocked it until (NULL: never blocked).
CREATE TABLE conveyor_rate_limit (
    queue TEXT NOT NULL PRIMARY KEY,
    starts TEXT NOT NULL DEFAULT '[]',
    blocked_until REAL
) WITHOUT ROWID;
