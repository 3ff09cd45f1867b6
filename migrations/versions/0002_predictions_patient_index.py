"""index predictions by patient and time

A CDS Hooks call reads one patient's newest predictions; without this index SQLite and
PostgreSQL walk ``ix_predictions_created_at`` over every patient's rows.

Revision ID: 0002_predictions_patient_index
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002_predictions_patient_index"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_predictions_patient_id_created_at", ["patient_id", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index("ix_predictions_patient_id_created_at")
