"""Alembic environment: always run through storage.migrate with a live connection."""
from alembic import context

from storage.models import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("run migrations with `hub migrate`, which supplies the connection")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
