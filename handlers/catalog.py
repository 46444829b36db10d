"""Imports every handler module so that the registry is complete."""
from handlers import (bots, chat, desk, dialogs, notifications, operators, orders, resources, routing, sns,  # noqa: F401
                      widgets)
from handlers import user_presence  # noqa: F401
from handlers import streams  # noqa: F401
from handlers import accounts, attachments, publish  # noqa: F401  (HTTP only)
from handlers import session  # noqa: F401  (last: it registers in every namespace above)
