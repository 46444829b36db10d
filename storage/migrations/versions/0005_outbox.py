"""outbox of durable server events

Revision ID: 0005
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'outbox',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('namespace', sa.String(length=50), nullable=False),
        sa.Column('event', sa.String(length=100), nullable=False),
        sa.Column('data', sa.JSON(), nullable=False),
        sa.Column('rooms', sa.JSON(), nullable=False),
        sa.Column('skip_sid', sa.String(length=64), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    )
    op.create_index('ix_outbox_published_at_id', 'outbox', ['published_at', 'id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_outbox_published_at_id', table_name='outbox')
    op.drop_table('outbox')
