"""Misused groups: a key function of another payload, a key that is not text, bad limits."""

from __future__ import annotations

from pydantic import BaseModel

from conveyor import job


class Delivery(BaseModel):
    account_id: str
    attempt_count: int


class Invoice(BaseModel):
    customer: str


def by_customer(p: Invoice) -> str:
    return p.customer


# expect: mypy=arg-type pyright=reportArgumentType
wrong_model = job("webhook.deliver", Delivery, group_key=by_customer)
# A misspelt field: pyright also says the lambda's type is unknown.
# expect: mypy=attr-defined pyright=reportAttributeAccessIssue,reportUnknownLambdaType,reportUnknownMemberType
misspelt = job("webhook.deliver", Delivery, group_key=lambda p: p.acount_id)
# expect: mypy=arg-type,return-value pyright=reportArgumentType
not_text = job("webhook.deliver", Delivery, group_key=lambda p: p.attempt_count)
# expect: mypy=call-overload pyright=reportArgumentType
float_limit = job("webhook.deliver", Delivery, group_key=str, group_concurrency=1.5)
# expect: mypy=call-overload pyright=reportArgumentType
tuple_rate = job("webhook.deliver", Delivery, group_key=str, group_rate=(5, 1))
