-- Conveyor schema for PostgreSQL: rate limits.

-- Each rate-limited queue's sliding log (see conveyor.drivers.rates): the start times of its
-- last starts, oldest first, at most the limit's count of them; and the time a handler's
-- RateLimited blocked it until (NULL: never blocked). A fetch of a rate-limited queue locks its
-- row for the length of its transaction, so fetches of one such queue take turns.
CREATE TABLE {schema}.conveyor_rate_limit (
    queue         text               NOT NULL PRIMARY KEY,
    starts        double precision[] NOT NULL DEFAULT '{}',
    blocked_until double precision
);
