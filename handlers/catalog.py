"""Imports every handler module so that the registry is complete."""
from handlers import chat  # noqa: F401
