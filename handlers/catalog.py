"""Imports every handler module so that the registry is complete."""
from handlers import chat, dialogs, notifications, operators, orders, sns  # noqa: F401
