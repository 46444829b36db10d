"""Imports every handler module so that the registry is complete."""
from handlers import (assistants, bots, chat, chat_messages, chat_send, chat_threads, desk,  # noqa: F401
                      dialogs, handoff, notifications, operators, orders, resources, routing, sns, sns_events,
                      sns_posts, sns_engagement, sns_trends, widgets)
from handlers import user_presence  # noqa: F401
from handlers import streams  # noqa: F401
from handlers import accounts, attachments, publish  # noqa: F401  (HTTP only)
from handlers import session  # noqa: F401  (last: it registers in every namespace above)
