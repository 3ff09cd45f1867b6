"""image quality gate: a verdict per cached series and per prediction

``image_feature_cache`` gains ``quality``, ``usable``, ``quality_reason`` and
``quality_signals``; ``predictions`` gains ``image_quality`` (the verdict on the series the
prediction looked at, or NULL without one).  Cached series from before this revision carry
no verdict, so the cache is emptied: the next run re-encodes and judges each series once.

Revision ID: 0005_image_quality
Revises: 0004_shared_security_state
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_image_quality"
down_revision: str | None = "0004_shared_security_state"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DELETE FROM image_feature_cache")
    with op.batch_alter_table("image_feature_cache", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("quality", sa.Float(), nullable=False, server_default=sa.text("1.0"))
        )
        batch_op.add_column(
            sa.Column("usable", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch_op.add_column(sa.Column("quality_reason", sa.String(length=300), nullable=True))
        batch_op.add_column(
            sa.Column("quality_signals", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("image_quality", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_column("image_quality")
    with op.batch_alter_table("image_feature_cache", schema=None) as batch_op:
        batch_op.drop_column("quality_signals")
        batch_op.drop_column("quality_reason")
        batch_op.drop_column("usable")
        batch_op.drop_column("quality")
