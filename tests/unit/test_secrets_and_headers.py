"""Secret payload fields (stored whole, shown redacted) and job headers, without a backend."""

from __future__ import annotations

import json
from typing import Annotated

import pytest
from pydantic import BaseModel, Field, SecretBytes, SecretStr

from conveyor import InvalidArgument
from conveyor.core.headers import MAX_HEADERS_BYTES, decode_headers, encode_headers, merged
from conveyor.core.secrets import (
    REDACTED,
    redact,
    redacted_payload,
    secret_paths,
    secrets_header,
)
from conveyor.core.serialization import decode_payload, encode_payload


class Card(BaseModel):
    number: str
    cvv: SecretStr


class Signup(BaseModel):
    user: str
    password: SecretStr
    token: SecretBytes | None = None
    pin: Annotated[SecretStr, Field(min_length=4)] | None = None
    cards: list[Card] = []
    by_name: dict[str, Card] = {}
    api_key: SecretStr = Field(default=SecretStr("k"), alias="apiKey")


class Plain(BaseModel):
    n: int


class Node(BaseModel):
    secret: SecretStr | None = None
    child: Node | None = None


def _signup() -> Signup:
    return Signup(
        user="ann",
        password=SecretStr("hunter2"),
        token=SecretBytes(b"t0k"),
        pin=SecretStr("1234"),
        cards=[Card(number="4111", cvv=SecretStr("123")), Card(number="5500", cvv=SecretStr("9"))],
        by_name={"home": Card(number="1", cvv=SecretStr("456"))},
        apiKey=SecretStr("sk-live"),
    )


def test_secret_paths_follow_aliases_nesting_lists_and_maps() -> None:
    assert secret_paths(Signup) == [
        ["password"],
        ["token"],
        ["pin"],
        ["cards", "*", "cvv"],
        ["by_name", "*", "cvv"],
        ["apiKey"],
    ]
    assert secret_paths(Plain) == [] and secrets_header(Plain) == {}
    # A self-referencing model ends (bounded depth) instead of recursing forever.
    assert secret_paths(Node)[:2] == [["secret"], ["child", "secret"]]


def test_the_stored_payload_keeps_secrets_for_the_handler() -> None:
    data = encode_payload("signup", Signup, _signup(), 1 << 20)
    assert b"**********" not in data
    back = decode_payload("signup", Signup, data)
    assert back.password.get_secret_value() == "hunter2"
    assert back.token is not None and back.token.get_secret_value() == b"t0k"
    assert back.cards[1].cvv.get_secret_value() == "9"
    assert back.by_name["home"].cvv.get_secret_value() == "456"
    assert back.model_dump() == _signup().model_dump()


def test_a_plain_model_is_encoded_as_before() -> None:
    assert encode_payload("p", Plain, Plain(n=3), 100) == Plain(n=3).model_dump_json().encode()


def test_redaction_hides_exactly_the_secret_values() -> None:
    data = encode_payload("signup", Signup, _signup(), 1 << 20)
    headers = secrets_header(Signup)
    shown = redact(json.loads(data), headers)
    assert shown["user"] == "ann" and shown["cards"][0]["number"] == "4111"
    for value in (shown["password"], shown["token"], shown["apiKey"], shown["pin"]):
        assert value == REDACTED
    assert [c["cvv"] for c in shown["cards"]] == [REDACTED, REDACTED]
    assert shown["by_name"]["home"]["cvv"] == REDACTED
    text = redacted_payload(data, headers)
    assert "hunter2" not in text and "sk-live" not in text and "456" not in text


def test_redaction_keeps_nulls_and_survives_odd_input() -> None:
    headers = secrets_header(Signup)
    assert redact({"user": "a", "password": "x", "token": None}, headers)["token"] is None
    assert redact({"cards": "not a list"}, headers) == {"cards": "not a list"}
    assert redact([1, 2], headers) == [1, 2]
    bad = {"conveyor-secrets": "not json"}
    assert redact({"password": "x"}, bad) == {"password": "x"}
    assert redacted_payload(b"\xffnot json", headers) == "\ufffdnot json"


def test_headers_round_trip_and_limits() -> None:
    text = encode_headers({"b": "2", "a": "é"})
    assert text == '{"a":"é","b":"2"}'
    assert decode_headers(text) == {"a": "é", "b": "2"}
    assert encode_headers({}) is None and decode_headers(None) == {}
    assert decode_headers("[1]") == {} and decode_headers("{") == {}
    assert decode_headers('{"a": 1, "b": "x"}') == {"b": "x"}
    assert merged(text, {"b": "3"}) == '{"a":"é","b":"3"}'
    with pytest.raises(InvalidArgument, match="over the limit"):
        encode_headers({"big": "x" * MAX_HEADERS_BYTES})
    with pytest.raises(InvalidArgument, match="must be text"):
        encode_headers({"n": 1})  # type: ignore[dict-item]
    with pytest.raises(InvalidArgument, match="UTF-8"):
        encode_headers({"s": "\udcff"})
