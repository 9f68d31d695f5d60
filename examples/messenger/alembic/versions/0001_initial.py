"""Users, friendships, chats, members, messages, and Pully's outbox (``pully outbox init``)."""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

# Pully's outbox, frozen as `pully outbox init` printed it when this migration was written (a
# migration never imports code that may change; a test compares it with Pully's current SQL).
PULLY_OUTBOX = """\
CREATE TABLE IF NOT EXISTS pully_outbox (
    id bigserial PRIMARY KEY,
    channel text NOT NULL,
    data jsonb NOT NULL,
    idempotency_key text,
    partition int NOT NULL DEFAULT 0,
    created_at timestamptz DEFAULT now()
);
CREATE INDEX IF NOT EXISTS pully_outbox_partition_id ON pully_outbox (partition, id);
CREATE TABLE IF NOT EXISTS pully_outbox_failed (
    id bigint PRIMARY KEY,
    channel text NOT NULL,
    data jsonb NOT NULL,
    idempotency_key text,
    partition int NOT NULL,
    created_at timestamptz,
    failed_at timestamptz NOT NULL DEFAULT now(),
    error text NOT NULL
);
CREATE OR REPLACE FUNCTION pully_outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pully_outbox_insert', NEW.partition::text);
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS pully_outbox_notify ON pully_outbox;
CREATE TRIGGER pully_outbox_notify AFTER INSERT ON pully_outbox
    FOR EACH ROW EXECUTE FUNCTION pully_outbox_notify();
"""


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(40), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime, server_default=sa.func.now(), nullable=False),
    )
    op.create_table(
        "friendships",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "requester_id",
            sa.Integer,
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "addressee_id",
            sa.Integer,
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("status", sa.String(10), nullable=False),
        sa.UniqueConstraint("requester_id", "addressee_id"),
        sa.CheckConstraint("requester_id <> addressee_id"),
    )
    op.create_table(
        "chats",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
    )
    op.create_table(
        "chat_members",
        sa.Column(
            "chat_id", sa.Integer, sa.ForeignKey("chats.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        ),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sender_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("chat_id", sa.Integer, sa.ForeignKey("chats.id", ondelete="CASCADE"), index=True),
        sa.Column("recipient_id", sa.Integer, sa.ForeignKey("users.id"), index=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("(chat_id IS NULL) <> (recipient_id IS NULL)"),
    )
    op.execute(PULLY_OUTBOX)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS pully_outbox, pully_outbox_failed")
    op.execute("DROP FUNCTION IF EXISTS pully_outbox_notify()")
    for table in ("messages", "chat_members", "chats", "friendships", "users"):
        op.drop_table(table)
