"""Every table module, imported so that `Base.metadata` is complete (Alembic, tests)."""
from storage import chat, desk, dialogs, notifications, orders, outbox, published, sns, users  # noqa: F401
from storage import tokens  # noqa: F401
from storage.base import Base

metadata = Base.metadata
