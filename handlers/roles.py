"""Role names and the role sets that operations and namespaces admit: written
here once. A token carries one of ROLES; `bot` is what a service token scoped to
one assistant acts as (handlers/context.py, Actor.acts_as)."""
from __future__ import annotations

USER, OPERATOR, ADMIN, SERVICE, VISITOR = "user", "operator", "admin", "service", "visitor"
BOT = "bot"

ROLES = frozenset({USER, OPERATOR, ADMIN, SERVICE, VISITOR})  # what a token may carry
STAFF = frozenset({OPERATOR, ADMIN})  # people who staff the desk
ACCOUNTS = frozenset({USER, OPERATOR, ADMIN})  # people with a user account
ACCOUNTS_AND_SERVICES = ACCOUNTS | {SERVICE}
STAFF_AND_SERVICES = STAFF | {SERVICE}
CONSOLES = STAFF | {SERVICE, BOT}  # who may connect to /operators
ANYONE = ROLES | {BOT}
OWNERS = ACCOUNTS  # who may own assistants, and take over and release their dialogs
