"""Imports every handler module so that the registry is complete."""
from handlers import chat, notifications, orders  # noqa: F401
