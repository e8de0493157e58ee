"""Misused rate limits: what a checker can see before the value checks at declaration do."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from conveyor import Rate, RateLimited, job


class Call(BaseModel):
    url: str


# expect: mypy=arg-type pyright=reportArgumentType
too_vague = Rate(2.5, per=1)
# expect: mypy=arg-type pyright=reportArgumentType
spelt_out = Rate(10, per="1s")
# expect: mypy=call-arg pyright=reportCallIssue
no_window = Rate(10)

# expect: mypy=call-overload pyright=reportArgumentType
tuple_limit = job("api.call", Call, rate_limit=(10, 1))
# expect: mypy=call-overload pyright=reportArgumentType
window_only = job("api.call", Call, rate_limit=timedelta(seconds=1))

# expect: mypy=arg-type pyright=reportArgumentType
later = RateLimited(retry_after="in a minute")


def mutate(rate: Rate) -> None:
    # expect: mypy=misc pyright=reportAttributeAccessIssue
    rate.count = 5
