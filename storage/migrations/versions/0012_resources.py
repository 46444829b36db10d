"""live resources: the current state of each declared (type, id)

Revision ID: 0012
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = '0012'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'resources',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('resource_type', sa.String(length=50), nullable=False),
        sa.Column('resource_id', sa.String(length=100), nullable=False),
        sa.Column('status', sa.String(length=50), nullable=False),
        sa.Column('progress', sa.Float(), nullable=True),
        sa.Column('result', sa.JSON(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('owner_ids', sa.JSON(), nullable=False),
        sa.Column('room', sa.String(length=200), nullable=True),
        sa.Column('service', sa.String(length=100), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_resources')),
        sa.UniqueConstraint('resource_type', 'resource_id', name='uq_resources_resource_type_resource_id'),
    )
    op.create_index('ix_resources_resource_type_updated_at', 'resources', ['resource_type', 'updated_at'],
                    unique=False)
    op.create_index('ix_resources_updated_at_id', 'resources', ['updated_at', 'id'], unique=False)
    op.create_table(
        'resource_owners',
        sa.Column('user_id', sa.BigInteger(), nullable=False),
        sa.Column('resource_type', sa.String(length=50), nullable=False),
        sa.Column('resource_id', sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint('user_id', 'resource_type', 'resource_id', name=op.f('pk_resource_owners')),
    )


def downgrade() -> None:
    op.drop_table('resource_owners')
    op.drop_index('ix_resources_updated_at_id', table_name='resources')
    op.drop_index('ix_resources_resource_type_updated_at', table_name='resources')
    op.drop_table('resources')
