"""A bounded shutdown: whatever hangs (a dead database under the outbox flush, a
blackholed Redis under the bus's last publish, a task that ignores cancellation),
the process is gone within `bound` seconds of SIGTERM, and the log says what it
was waiting for.

The steps log themselves through `step()`; a watchdog thread, armed when the
signal arrives, ends the process if they have not finished by the bound. A thread,
not a task: a stuck event loop must not keep it from firing."""
from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger("hub.shutdown")


class Shutdown:
    def __init__(self, bound: float) -> None:
        self.bound = bound
        self.waiting_for = "nothing"
        self._started: float | None = None
        self._watchdog = threading.Timer(bound, self._expire)
        self._watchdog.daemon = True

    @property
    def requests_timeout(self) -> float:
        """How long open requests and websockets may take to end: half the bound,
        leaving the other half to the steps after them."""
        return self.bound / 2

    def arm(self, why: str) -> None:
        self._started = time.monotonic()
        self._watchdog.start()
        log.info("shutdown: %s; the process ends within %.0f s", why, self.bound)

    def step(self, what: str) -> None:
        self.waiting_for = what
        log.info("shutdown: %s", what)

    def finish(self) -> None:
        if self._started is None:  # never signalled: startup failed
            return
        self._watchdog.cancel()
        log.info("shutdown: complete in %.1f s", time.monotonic() - self._started)

    def _expire(self) -> None:
        log.error("shutdown: still waiting for %s after %.0f s; exiting now", self.waiting_for, self.bound)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(1)
