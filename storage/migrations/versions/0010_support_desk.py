"""the support desk: routing and widget settings of assistants, who and where a
dialog's visitor is, transfers, closing, notes, canned replies, app keys, bots connected

Revision ID: 0010
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0004'
branch_labels = None
depends_on = None

BIG = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
NOW = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table('assistants') as batch:
        batch.add_column(sa.Column('routing', sa.String(length=12), nullable=False, server_default='manual'))
        batch.add_column(sa.Column('greeting', sa.String(length=1000), nullable=True))
        batch.add_column(sa.Column('widget_title', sa.String(length=100), nullable=True))
        batch.add_column(sa.Column('widget_color', sa.String(length=7), nullable=True))
        batch.add_column(sa.Column('hours', sa.Text(), nullable=True))
    with op.batch_alter_table('dialogs') as batch:
        batch.add_column(sa.Column('origin', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('page_url', sa.String(length=500), nullable=True))
        batch.add_column(sa.Column('visitor_name', sa.String(length=100), nullable=True))
        batch.add_column(sa.Column('visitor_contact', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('transfer_to', BIG, nullable=True))
        batch.add_column(sa.Column('transfer_at', NOW, nullable=True))
        batch.add_column(sa.Column('closed_at', NOW, nullable=True))
        batch.create_foreign_key(op.f('fk_dialogs_transfer_to_users'), 'users', ['transfer_to'], ['id'],
                                 ondelete='SET NULL')
        # The routing sweep looks for pending transfers every second.
        batch.create_index(op.f('ix_dialogs_transfer_to'), ['transfer_to'], unique=False)
    op.create_table('dialog_notes',
    sa.Column('id', BIG, nullable=False),
    sa.Column('dialog_id', BIG, nullable=False),
    sa.Column('author_id', BIG, nullable=True),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('created_at', NOW, nullable=False),
    sa.Column('updated_at', NOW, nullable=False),
    sa.ForeignKeyConstraint(['dialog_id'], ['dialogs.id'], name=op.f('fk_dialog_notes_dialog_id_dialogs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], name=op.f('fk_dialog_notes_author_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dialog_notes'))
    )
    op.create_index(op.f('ix_dialog_notes_dialog_id'), 'dialog_notes', ['dialog_id'], unique=False)
    op.create_table('canned_replies',
    sa.Column('id', BIG, nullable=False),
    sa.Column('shortcut', sa.String(length=40), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('created_by', BIG, nullable=True),
    sa.Column('created_at', NOW, nullable=False),
    sa.Column('updated_at', NOW, nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], name=op.f('fk_canned_replies_created_by_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_canned_replies')),
    sa.UniqueConstraint('shortcut', name=op.f('uq_canned_replies_shortcut'))
    )
    op.create_table('assistant_app_keys',
    sa.Column('id', BIG, nullable=False),
    sa.Column('assistant_id', BIG, nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', NOW, nullable=False),
    sa.Column('revoked_at', NOW, nullable=True),
    sa.ForeignKeyConstraint(['assistant_id'], ['assistants.id'], name=op.f('fk_assistant_app_keys_assistant_id_assistants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_assistant_app_keys')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_assistant_app_keys_key_hash'))
    )
    op.create_index(op.f('ix_assistant_app_keys_assistant_id'), 'assistant_app_keys', ['assistant_id'], unique=False)
    op.create_table('routing_turns',
    sa.Column('operator_id', BIG, nullable=False),
    sa.Column('last_assigned_at', NOW, nullable=False),
    sa.ForeignKeyConstraint(['operator_id'], ['users.id'], name=op.f('fk_routing_turns_operator_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('operator_id', name=op.f('pk_routing_turns'))
    )
    op.create_table('assistant_bots',
    sa.Column('assistant_id', BIG, nullable=False),
    sa.Column('instance_id', sa.String(length=64), nullable=False),
    sa.Column('seen_at', NOW, nullable=False),
    sa.ForeignKeyConstraint(['assistant_id'], ['assistants.id'], name=op.f('fk_assistant_bots_assistant_id_assistants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('assistant_id', 'instance_id', name=op.f('pk_assistant_bots'))
    )


def downgrade() -> None:
    op.drop_table('assistant_bots')
    op.drop_table('routing_turns')
    op.drop_index(op.f('ix_assistant_app_keys_assistant_id'), table_name='assistant_app_keys')
    op.drop_table('assistant_app_keys')
    op.drop_table('canned_replies')
    op.drop_index(op.f('ix_dialog_notes_dialog_id'), table_name='dialog_notes')
    op.drop_table('dialog_notes')
    with op.batch_alter_table('dialogs') as batch:
        batch.drop_index(op.f('ix_dialogs_transfer_to'))
        batch.drop_constraint(op.f('fk_dialogs_transfer_to_users'), type_='foreignkey')
        for column in ('closed_at', 'transfer_at', 'transfer_to', 'visitor_contact', 'visitor_name', 'page_url',
                       'origin'):
            batch.drop_column(column)
    with op.batch_alter_table('assistants') as batch:
        for column in ('hours', 'widget_color', 'widget_title', 'greeting', 'routing'):
            batch.drop_column(column)
