"""Imports every handler module so that the registry is complete."""
from handlers import chat, dialogs, notifications, operators, orders, sns  # noqa: F401
from handlers import session  # noqa: F401  (last: it registers in every namespace above)
