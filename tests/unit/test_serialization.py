"""Payload encoding and decoding: validation, size limits, untyped producers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import UUID

import pytest
from pydantic import BaseModel, ConfigDict, Field

from conveyor import PayloadTooLarge, PayloadValidationError
from conveyor.core.serialization import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    check_size,
    decode_payload,
    encode_payload,
    encode_untyped_payload,
)

LIMIT = DEFAULT_MAX_PAYLOAD_BYTES


class Address(BaseModel):
    city: str
    zip_code: str


class Invite(BaseModel):
    invitation_id: UUID
    to_email: str
    count: int = Field(ge=0)
    sent_at: datetime | None = None
    address: Address | None = None


class Other(BaseModel):
    x: int


INVITE = Invite(
    invitation_id=UUID("12345678-1234-5678-1234-567812345678"),
    to_email="a@example.com",
    count=2,
    sent_at=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    address=Address(city="Oslo", zip_code="0150"),
)


def test_round_trip_preserves_the_model() -> None:
    data = encode_payload("email.invite", Invite, INVITE, LIMIT)
    assert isinstance(data, bytes)
    assert decode_payload("email.invite", Invite, data) == INVITE


def test_encoding_is_plain_json() -> None:
    data = encode_payload("email.invite", Invite, INVITE, LIMIT)
    decoded = json.loads(data)
    assert decoded["invitation_id"] == "12345678-1234-5678-1234-567812345678"
    assert decoded["address"] == {"city": "Oslo", "zip_code": "0150"}


def test_encode_refuses_an_instance_of_another_model() -> None:
    with pytest.raises(PayloadValidationError, match="expected an instance of Invite, got Other"):
        encode_payload("email.invite", Invite, Other(x=1), LIMIT)


def test_encode_revalidates_a_model_built_without_validation() -> None:
    bogus = Invite.model_construct(invitation_id=UUID(int=1), to_email="a@example.com", count=-1)
    with pytest.raises(PayloadValidationError) as info:
        encode_payload("email.invite", Invite, bogus, LIMIT)
    assert info.value.job_name == "email.invite"
    assert "count" in info.value.detail


def test_size_limit_raises_payload_too_large_naming_the_job_and_sizes() -> None:
    data = encode_payload("email.invite", Invite, INVITE, LIMIT)
    limit = len(data) - 1
    with pytest.raises(PayloadTooLarge) as info:
        encode_payload("email.invite", Invite, INVITE, limit)
    err = info.value
    assert err.job_name == "email.invite"
    assert err.size == len(data)
    assert err.limit == limit
    assert "'email.invite'" in str(err)
    assert f"{len(data)} bytes" in str(err)
    assert f"limit of {limit} bytes" in str(err)


def test_payload_exactly_at_the_limit_is_accepted() -> None:
    data = encode_payload("email.invite", Invite, INVITE, LIMIT)
    assert encode_payload("email.invite", Invite, INVITE, len(data)) == data
    assert check_size("j", b"abc", 3) == b"abc"
    with pytest.raises(PayloadTooLarge):
        check_size("j", b"abcd", 3)


def test_payload_errors_are_value_errors() -> None:
    assert issubclass(PayloadTooLarge, ValueError)
    assert issubclass(PayloadValidationError, ValueError)


def test_decode_invalid_payload_names_the_job_and_the_field() -> None:
    data = b'{"invitation_id": "not-a-uuid", "to_email": "a@example.com", "count": 1}'
    with pytest.raises(PayloadValidationError) as info:
        decode_payload("email.invite", Invite, data)
    assert info.value.job_name == "email.invite"
    assert "invitation_id" in info.value.detail
    assert "'email.invite'" in str(info.value)


def test_decode_names_nested_fields_with_dots() -> None:
    data = json.dumps(
        {
            "invitation_id": str(UUID(int=1)),
            "to_email": "a@example.com",
            "count": 1,
            "address": {"city": "Oslo"},
        }
    ).encode()
    with pytest.raises(PayloadValidationError) as info:
        decode_payload("email.invite", Invite, data)
    assert "address.zip_code" in info.value.detail


def test_decode_reports_every_missing_field() -> None:
    with pytest.raises(PayloadValidationError) as info:
        decode_payload("email.invite", Invite, b"{}")
    for name in ("invitation_id", "to_email", "count"):
        assert name in info.value.detail


def test_decode_garbage_is_a_validation_error() -> None:
    with pytest.raises(PayloadValidationError):
        decode_payload("email.invite", Invite, b"\xff not json")


def test_decode_a_non_object_is_a_validation_error() -> None:
    with pytest.raises(PayloadValidationError) as info:
        decode_payload("email.invite", Invite, b"[1, 2]")
    assert "<payload>" in info.value.detail


# -- untyped producers ---------------------------------------------------------------------------


def test_untyped_dict_is_compact_json() -> None:
    data = encode_untyped_payload("j", {"a": 1, "b": [1, "x"]}, LIMIT)
    assert data == b'{"a":1,"b":[1,"x"]}'


def test_untyped_str_is_kept_as_given() -> None:
    text = '{"a": 1}'
    assert encode_untyped_payload("j", text, LIMIT) == text.encode()


def test_untyped_bytes_are_kept_as_given() -> None:
    assert encode_untyped_payload("j", b'{"a": "\xc3\xa9"}', LIMIT) == b'{"a": "\xc3\xa9"}'


def test_untyped_unicode_str_is_utf8() -> None:
    data = encode_untyped_payload("j", '{"name": "é"}', LIMIT)
    assert json.loads(data) == {"name": "é"}


@pytest.mark.parametrize("payload", ["{not json", b"{'a': 1}", "", b"\xff\xfe"])
def test_untyped_invalid_json_is_refused(payload: str | bytes) -> None:
    with pytest.raises(PayloadValidationError, match="not valid JSON") as info:
        encode_untyped_payload("email.invite", payload, LIMIT)
    assert info.value.job_name == "email.invite"


@pytest.mark.parametrize("payload", ['{"a": NaN}', b'{"a": Infinity}', '{"a": [-Infinity]}'])
def test_untyped_text_with_non_json_numbers_is_refused(payload: str | bytes) -> None:
    # The same rule as for a mapping: what is stored must be standard JSON for any consumer.
    with pytest.raises(PayloadValidationError, match="not valid JSON"):
        encode_untyped_payload("j", payload, LIMIT)


@pytest.mark.parametrize("payload", ["[1, 2]", "3", '"text"', b"null", "true"])
def test_untyped_json_that_is_not_an_object_is_refused(payload: str | bytes) -> None:
    with pytest.raises(PayloadValidationError, match="must be a JSON object"):
        encode_untyped_payload("j", payload, LIMIT)


@pytest.mark.parametrize("payload", [{"a": {1, 2}}, {"a": object()}, {"a": float("nan")}])
def test_untyped_mapping_that_is_not_json_is_refused(payload: dict[str, object]) -> None:
    with pytest.raises(PayloadValidationError, match="not JSON-serializable"):
        encode_untyped_payload("j", payload, LIMIT)


def test_untyped_size_limit() -> None:
    with pytest.raises(PayloadTooLarge) as info:
        encode_untyped_payload("big.job", {"blob": "x" * 100}, 50)
    assert info.value.job_name == "big.job"
    assert info.value.size > 100
    assert info.value.limit == 50


# -- field aliases -------------------------------------------------------------------------------


class Aliased(BaseModel):
    to_email: str = Field(alias="toEmail")
    count: int = 0


class AliasedByName(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    to_email: str = Field(alias="toEmail")
    reply_to: str | None = Field(default=None, alias="replyTo")


def test_aliased_fields_round_trip() -> None:
    payload = Aliased(toEmail="a@example.com", count=2)
    data = encode_payload("j", Aliased, payload, LIMIT)
    assert json.loads(data) == {"toEmail": "a@example.com", "count": 2}
    assert decode_payload("j", Aliased, data) == payload


@pytest.mark.parametrize(
    "payload",
    [
        AliasedByName(to_email="a@example.com", reply_to="b@example.com"),
        AliasedByName(toEmail="a@example.com", replyTo="b@example.com"),
        AliasedByName(to_email="a@example.com"),
    ],
)
def test_populate_by_name_models_round_trip_by_alias(payload: AliasedByName) -> None:
    data = encode_payload("j", AliasedByName, payload, LIMIT)
    assert "toEmail" in json.loads(data)
    assert decode_payload("j", AliasedByName, data) == payload


def test_aliased_model_built_without_validation_is_still_checked() -> None:
    bogus = Aliased.model_construct(count=1)  # the required toEmail is missing
    with pytest.raises(PayloadValidationError, match="toEmail"):
        encode_payload("j", Aliased, bogus, LIMIT)


class Opaque(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    thing: object


def test_a_payload_that_cannot_be_serialized_is_a_validation_error() -> None:
    with pytest.raises(PayloadValidationError, match="cannot be encoded as JSON"):
        encode_payload("j", Opaque, Opaque(thing=object()), LIMIT)


def test_writable_text_escapes_what_no_backend_stores_and_bounds_the_length() -> None:
    from conveyor.core.serialization import MAX_TEXT_CHARS, writable_text

    assert writable_text("plain") == "plain"
    assert writable_text("caf\udce9\x00") == "caf\\udce9\\x00"
    huge = "start " + "x" * 1_000_000 + " end"
    cut = writable_text(huge)
    assert len(cut) < MAX_TEXT_CHARS + 100
    assert cut.startswith("start ") and cut.endswith(" end")
    assert "characters left out" in cut
