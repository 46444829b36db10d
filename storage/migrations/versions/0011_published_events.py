"""events published by services, kept for `sync`

Revision ID: 0011
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = '0011'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'published_events',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('namespace', sa.String(length=50), nullable=False),
        sa.Column('room', sa.String(length=200), nullable=False),
        sa.Column('event', sa.String(length=100), nullable=False),
        sa.Column('data', sa.JSON(), nullable=False),
        sa.Column('published_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_published_events')),
    )
    op.create_index('ix_published_events_room', 'published_events',
                    ['namespace', 'room', 'published_at', 'id'], unique=False)
    op.create_index('ix_published_events_published_at', 'published_events', ['published_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_published_events_published_at', table_name='published_events')
    op.drop_index('ix_published_events_room', table_name='published_events')
    op.drop_table('published_events')
