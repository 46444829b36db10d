"""indexes for `sync` on /orders and /notifications

Revision ID: 0006
Revises: 0002
"""
from alembic import op

revision = '0006'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # (owner, updated_at, id): one customer's orders / one user's notifications in the
    # order `sync` pages through them. Staff's sync over every order uses ix_orders_updated_at.
    op.create_index('ix_orders_customer_id_updated_at_id', 'orders', ['customer_id', 'updated_at', 'id'],
                    unique=False)
    op.create_index('ix_notifications_user_id_updated_at_id', 'notifications', ['user_id', 'updated_at', 'id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_notifications_user_id_updated_at_id', table_name='notifications')
    op.drop_index('ix_orders_customer_id_updated_at_id', table_name='orders')
