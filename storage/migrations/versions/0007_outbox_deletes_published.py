"""published outbox events are deleted, not marked: drop the index on published_at

Revision ID: 0007
Revises: 0005
"""
from alembic import op

revision = '0007'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The index served finding unpublished events among marked ones; the table now
    # holds only events not yet published (storage/outbox.py).
    if op.get_bind().dialect.name == "sqlite":
        # An event's id must never be handed out again (instances and the log drop
        # an id they have seen), and SQLite reuses the ids of deleted last rows
        # unless the table is AUTOINCREMENT. The copy keeps the highest id so far.
        with op.batch_alter_table('outbox', recreate='always', table_kwargs={'sqlite_autoincrement': True}) as batch:
            batch.drop_index('ix_outbox_published_at_id')
    else:
        op.drop_index('ix_outbox_published_at_id', table_name='outbox')
    # Rows an older version marked go now; `prune` takes those that a version still
    # running marks.
    op.execute("DELETE FROM outbox WHERE published_at IS NOT NULL")


def downgrade() -> None:
    op.create_index('ix_outbox_published_at_id', 'outbox', ['published_at', 'id'], unique=False)
