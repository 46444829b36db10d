"""The resource types services may declare, each with its status machine. Registered
in code: the operations check transitions against them, and the AsyncAPI and OpenAPI
documents list them."""
from __future__ import annotations

from dataclasses import dataclass

from handlers.registry import REGISTRY


@dataclass(frozen=True)
class ResourceType:
    name: str
    description: str
    # status -> the statuses it may become; a status with none is terminal.
    transitions: dict[str, tuple[str, ...]]
    initial: tuple[str, ...]  # statuses a resource may be declared in
    # Whether every change also goes to the owners' own rooms, watched or not
    # (EduStream pushes booking updates to its app unasked).
    push_to_owners: bool = False

    @property
    def statuses(self) -> tuple[str, ...]:
        return tuple(self.transitions)

    @property
    def terminal(self) -> tuple[str, ...]:
        return tuple(s for s, nxt in self.transitions.items() if not nxt)

    def allows(self, old: str, new: str) -> bool:
        """Same status again is a progress update, allowed until the resource ends."""
        if old == new:
            return bool(self.transitions[old])
        return new in self.transitions[old]

    def describe(self) -> dict:
        """How the API documents show it."""
        return {"description": self.description, "statuses": list(self.statuses),
                "initial": list(self.initial), "terminal": list(self.terminal),
                "transitions": {s: list(n) for s, n in self.transitions.items()}}


RESOURCE_TYPES: dict[str, ResourceType] = REGISTRY.resource_types


def resource_type(kind: ResourceType) -> ResourceType:
    RESOURCE_TYPES[kind.name] = kind
    return kind


def documented(types: dict[str, ResourceType]) -> dict:
    """`x-resource-types` of the AsyncAPI and OpenAPI documents."""
    return {name: kind.describe() for name, kind in sorted(types.items())}


BOOKING = resource_type(ResourceType(
    name="booking",
    description="An EduStream lesson booking; its app hears every change as booking_update.",
    transitions={
        "PENDING": ("CONFIRMED", "CANCELLED", "REJECTED", "EXPIRED"),
        "CONFIRMED": ("COMPLETED", "CANCELLED", "NO_SHOW"),
        "CANCELLED": (), "REJECTED": (), "EXPIRED": (), "COMPLETED": (), "NO_SHOW": (),
    },
    initial=("PENDING", "CONFIRMED"),
    push_to_owners=True,
))

TASK = resource_type(ResourceType(
    name="task",
    description="A long-running job (AI analysis, generation, scraping): progress, result, cancel.",
    transitions={
        "queued": ("running", "cancelled", "failed"),
        "running": ("succeeded", "failed", "cancelled"),
        "succeeded": (), "failed": (), "cancelled": (),
    },
    initial=("queued", "running"),
))
