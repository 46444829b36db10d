"""Which sockets of this instance use which token, so a revoked token's sockets can
be disconnected wherever they are."""
from __future__ import annotations

from collections import defaultdict


class Connections:
    def __init__(self) -> None:
        self._by_jti: dict[str, set[tuple[str, str]]] = defaultdict(set)

    def add(self, jti: str | None, namespace: str, sid: str) -> None:
        if jti:
            self._by_jti[jti].add((namespace, sid))

    def remove(self, jti: str | None, namespace: str, sid: str) -> None:
        sockets = self._by_jti.get(jti)
        if sockets is not None:
            sockets.discard((namespace, sid))
            if not sockets:
                del self._by_jti[jti]

    def using(self, jti: str) -> list[tuple[str, str]]:
        return list(self._by_jti.get(jti, ()))
