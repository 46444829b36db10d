"""Shared pieces of operation input and output models, and the one set of bounded
field types every input uses.

Every value a client sends must fit where it goes: an id in a signed 64-bit column,
text in a PostgreSQL text column (which refuses NUL), a time within the range the
database and Python's datetime can hold, JSON within the bus's encoders. A value that
does not is a `validation_error` at the edge, never a failure deep inside."""
from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

T = TypeVar("T")

MAX_ID = 2**63 - 1  # a signed 64-bit column (BIGINT)
MIN_INT = -(2**63)
# Deeper than any list is long, and small enough that offset + limit and
# (page - 1) * page_size stay far inside 64 bits.
MAX_OFFSET = 10**9
MAX_PAGE = 10**7
MAX_TEXT = 64 * 1024  # no longer than the payload limit's default
# Times a client may name: the database and Python both hold them, and a timezone
# offset applied to either end cannot leave datetime's range.
MIN_TIME = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_TIME = datetime(9000, 1, 1, tzinfo=timezone.utc)
MAX_JSON_DEPTH = 32
NO_NUL = r"^[^\x00]*$"

Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Offset = Annotated[int, Field(ge=0, le=MAX_OFFSET)]
PageNumber = Annotated[int, Field(ge=1, le=MAX_PAGE)]
Limit = Annotated[int, Field(ge=1, le=200)]  # a page's size


def Text(max_length: int = MAX_TEXT, *, min_length: int = 0, pattern: str = NO_NUL) -> Any:
    """Bounded text without NUL characters (lone surrogates are refused by pydantic
    itself): `name: Text(200, min_length=1)`. A `pattern` of the caller's must
    exclude NUL as well."""
    return Annotated[str, StringConstraints(min_length=min_length, max_length=max_length, pattern=pattern)]


def in_time_range(moment: datetime) -> datetime:
    """`moment` as an aware UTC datetime, or ValueError if it is outside the range a
    client may name (naive times are UTC, as the contract's timestamps are)."""
    # The year first: converting a time near datetime's ends to UTC overflows.
    if not MIN_TIME.year <= moment.year < MAX_TIME.year:
        raise ValueError(f"must be between {MIN_TIME.year} and {MAX_TIME.year}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    moment = moment.astimezone(timezone.utc)
    if not MIN_TIME <= moment < MAX_TIME:
        raise ValueError(f"must be between {MIN_TIME.year} and {MAX_TIME.year}")
    return moment


# Lax: over JSON a time is an ISO-8601 string.
DateTime = Annotated[datetime, Field(strict=False), AfterValidator(in_time_range)]


def _json_value(value: Any, depth: int = 0) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            _json_value(key, depth + 1)
            _json_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _json_value(item, depth + 1)
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        if not MIN_INT <= value <= MAX_ID:
            raise ValueError("integers must fit in 64 bits")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("numbers must be finite")
    elif isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text must not contain NUL characters")
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValueError("text must be valid Unicode") from None
    else:
        raise ValueError(f"{type(value).__name__} is not JSON")


def _json_object(value: dict[str, Any]) -> dict[str, Any]:
    _json_value(value)
    return value


# Free-form JSON a client stores or relays (notification data, published events):
# every encoder on its way (the database's, orjson, msgpack) must take it.
# (The schema names the bound, for clients and for the test that every free-form
# object of an input is one of these.)
JsonObject = Annotated[dict[str, Any], AfterValidator(_json_object),
                       Field(json_schema_extra={"x-max-depth": MAX_JSON_DEPTH})]


class Input(BaseModel):
    """Base of every request model: unknown fields and loose types are errors, so a
    client with a typo hears about it instead of being silently half-understood."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Paging(Input):
    """The page of a list operation: `limit` items from `offset` on (what `Page`
    echoes). Every input that pages takes these two fields from here."""

    limit: Limit = 50
    offset: Offset = 0


def exactly_one(a: str, b: str) -> Any:
    """A model validator: exactly one of the fields `a` and `b` is given (not None).
    In a model's body: `_one_of = exactly_one("thread_id", "other_user_id")`; it runs
    before the model's validators defined below it."""

    def check(model: BaseModel) -> BaseModel:
        if (getattr(model, a) is None) == (getattr(model, b) is None):
            raise ValueError(f"give exactly one of {a} and {b}")
        return model

    return model_validator(mode="after")(check)


class Empty(Input):
    pass


class Page(Output, Generic[T]):
    """The contract's list envelope."""

    total: int
    limit: int
    offset: int
    items: list[T]
