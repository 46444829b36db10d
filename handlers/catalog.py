"""Imports every handler module so that the registry is complete."""
from handlers import (assistants, bots, chat, desk, dialogs, handoff, notifications, operators, orders,  # noqa: F401
                      resources, routing, sns, widgets)
from handlers import user_presence  # noqa: F401
from handlers import streams  # noqa: F401
from handlers import session  # noqa: F401  (last: it registers in every namespace above)
