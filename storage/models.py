"""Every table module, imported so that `Base.metadata` is complete (Alembic, tests)."""
from storage import chat, dialogs, notifications, orders, outbox, published, sns, users  # noqa: F401
from storage.base import Base

metadata = Base.metadata
