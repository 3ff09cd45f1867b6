"""Incremental nightly: the time a nightly run last found a prediction's inputs unchanged,
and the persistent segment-embedding cache

Revision ID: 0007_incremental_nightly
Revises: 0006_terminology_expansions
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_incremental_nightly"
down_revision: str | None = "0006_terminology_expansions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "segment_embeddings",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("encoder_id", sa.String(length=64), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_segment_embeddings")),
    )
    op.create_index(op.f("ix_segment_embeddings_created_at"), "segment_embeddings", ["created_at"])
    op.create_index(op.f("ix_segment_embeddings_encoder_id"), "segment_embeddings", ["encoder_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_segment_embeddings_encoder_id"), table_name="segment_embeddings")
    op.drop_index(op.f("ix_segment_embeddings_created_at"), table_name="segment_embeddings")
    op.drop_table("segment_embeddings")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("checked_at")
