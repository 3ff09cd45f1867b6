"""Value-set expansions cached from a terminology server (``mprtm terminology refresh``)

Revision ID: 0006_terminology_expansions
Revises: 0005_image_quality
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_terminology_expansions"
down_revision: str | None = "0005_image_quality"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "terminology_expansions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=255), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("server", sa.String(length=500), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("codes", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_terminology_expansions")),
        sa.UniqueConstraint(
            "url", "version", name=op.f("uq_terminology_expansions_url_version")
        ),
    )


def downgrade() -> None:
    op.drop_table("terminology_expansions")
