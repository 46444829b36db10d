"""Shared pieces of operation input and output models."""
from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class Input(BaseModel):
    """Base of every request model: unknown fields and loose types are errors, so a
    client with a typo hears about it instead of being silently half-understood."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Paging(Input):
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0)


class Empty(Input):
    pass


class Page(Output, Generic[T]):
    """The contract's list envelope."""

    total: int
    limit: int
    offset: int
    items: list[T]
