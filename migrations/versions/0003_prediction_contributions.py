"""store each modality's contribution to a prediction

``predictions.contributions`` holds, per outcome, the reference patient's probability and
the Shapley contribution of each modality (``model/attribution.py``).  Rows written
before this revision get ``{}`` ("not recorded").

Revision ID: 0003_prediction_contributions
Revises: 0002_predictions_patient_index
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_prediction_contributions"
down_revision: str | None = "0002_predictions_patient_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("contributions", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )


def downgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_column("contributions")
