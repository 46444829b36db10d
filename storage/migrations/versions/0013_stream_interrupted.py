"""streamed bot replies: a dialog message cut short is marked interrupted

Revision ID: 0013
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('dialog_messages') as batch:
        batch.add_column(sa.Column('interrupted', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('dialog_messages') as batch:
        batch.drop_column('interrupted')
