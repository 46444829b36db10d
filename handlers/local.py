"""What operations keep on one running instance between calls: the chat send
batch and the facts it caches, the resource progress batch. The instance makes
one `InstanceLocal` and gives it to every Context it builds; each module owns the
things it keeps there (its class is the key), so neither the database handle nor
any other layer holds handler state."""
from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T")


class InstanceLocal:
    def __init__(self) -> None:
        self._kept: dict[type, object] = {}

    def get(self, kind: type[T], make: Callable[[], T] | None = None) -> T:
        """The one `kind` kept on this instance, made (by `make`, else `kind()`) on first use."""
        item = self._kept.get(kind)
        if item is None:
            item = self._kept[kind] = (make or kind)()
        return item  # type: ignore[return-value]
