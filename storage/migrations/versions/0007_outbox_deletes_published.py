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
    # holds only events not yet published (storage/outbox.py). Rows an older
    # version marked go now; `prune` takes those a version still running marks.
    op.execute("DELETE FROM outbox WHERE published_at IS NOT NULL")
    op.drop_index('ix_outbox_published_at_id', table_name='outbox')


def downgrade() -> None:
    op.create_index('ix_outbox_published_at_id', 'outbox', ['published_at', 'id'], unique=False)
