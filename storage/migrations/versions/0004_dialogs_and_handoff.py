"""dialogs, assistants, dialog messages and handoff requests

Revision ID: 0004
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('assistants',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('owner_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('allowed_origins', sa.Text(), nullable=False),
    sa.Column('system_prompt', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_assistants_owner_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_assistants'))
    )
    op.create_index(op.f('ix_assistants_owner_id'), 'assistants', ['owner_id'], unique=False)
    op.create_index(op.f('ix_assistants_updated_at'), 'assistants', ['updated_at'], unique=False)
    op.create_table('dialogs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('assistant_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('visitor_id', sa.String(length=100), nullable=True),
    sa.Column('channel', sa.String(length=10), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('handoff_status', sa.String(length=12), nullable=False),
    sa.Column('operator_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('handoff_reason', sa.String(length=500), nullable=True),
    sa.Column('requested_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('accepted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_message_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['assistant_id'], ['assistants.id'], name=op.f('fk_dialogs_assistant_id_assistants'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['operator_id'], ['users.id'], name=op.f('fk_dialogs_operator_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dialogs'))
    )
    op.create_index('ix_dialogs_assistant_visitor', 'dialogs', ['assistant_id', 'visitor_id'], unique=False)
    op.create_index('ix_dialogs_handoff_queue', 'dialogs', ['handoff_status', 'requested_at'], unique=False)
    op.create_index('ix_dialogs_operator_status', 'dialogs', ['operator_id', 'handoff_status'], unique=False)
    op.create_index(op.f('ix_dialogs_updated_at'), 'dialogs', ['updated_at'], unique=False)
    op.create_table('dialog_messages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('dialog_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('sender', sa.String(length=10), nullable=False),
    sa.Column('sender_id', sa.String(length=100), nullable=True),
    sa.Column('sender_key', sa.String(length=120), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('client_msg_id', sa.String(length=100), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['dialog_id'], ['dialogs.id'], name=op.f('fk_dialog_messages_dialog_id_dialogs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dialog_messages')),
    sa.UniqueConstraint('dialog_id', 'sender_key', 'client_msg_id', name='uq_dialog_messages_client_msg')
    )
    op.create_index('ix_dialog_messages_dialog_id_id', 'dialog_messages', ['dialog_id', 'id'], unique=False)
    op.create_index(op.f('ix_dialog_messages_updated_at'), 'dialog_messages', ['updated_at'], unique=False)
    op.create_table('handoff_requests',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('dialog_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('request_id', sa.String(length=100), nullable=True),
    sa.Column('reason', sa.String(length=500), nullable=True),
    sa.Column('requested_by', sa.String(length=120), nullable=False),
    sa.Column('outcome', sa.String(length=12), nullable=False),
    sa.Column('operator_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['dialog_id'], ['dialogs.id'], name=op.f('fk_handoff_requests_dialog_id_dialogs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_handoff_requests')),
    sa.UniqueConstraint('dialog_id', 'request_id', name='uq_handoff_requests_request')
    )
    op.create_index(op.f('ix_handoff_requests_dialog_id'), 'handoff_requests', ['dialog_id'], unique=False)
    op.create_index(op.f('ix_handoff_requests_updated_at'), 'handoff_requests', ['updated_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_handoff_requests_updated_at'), table_name='handoff_requests')
    op.drop_index(op.f('ix_handoff_requests_dialog_id'), table_name='handoff_requests')
    op.drop_table('handoff_requests')
    op.drop_index(op.f('ix_dialog_messages_updated_at'), table_name='dialog_messages')
    op.drop_index('ix_dialog_messages_dialog_id_id', table_name='dialog_messages')
    op.drop_table('dialog_messages')
    op.drop_index(op.f('ix_dialogs_updated_at'), table_name='dialogs')
    op.drop_index('ix_dialogs_operator_status', table_name='dialogs')
    op.drop_index('ix_dialogs_handoff_queue', table_name='dialogs')
    op.drop_index('ix_dialogs_assistant_visitor', table_name='dialogs')
    op.drop_table('dialogs')
    op.drop_index(op.f('ix_assistants_updated_at'), table_name='assistants')
    op.drop_index(op.f('ix_assistants_owner_id'), table_name='assistants')
    op.drop_table('assistants')
