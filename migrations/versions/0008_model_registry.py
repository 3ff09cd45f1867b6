"""model registry: version states, audited changes, stored validations, shadow predictions

``model_versions`` gains ``state`` (candidate, shadow, active, retired) and
``state_changed_at``, with a partial unique index that allows one ``active`` row.  The
newest existing version (the one the service ran last) becomes ``active``; older ones
become ``retired``.  New tables: ``model_version_events`` (who, when, why of each
change), ``model_validations`` (stored ``mprtm validate`` reports) and
``shadow_predictions`` (scores of shadow versions, never shown or written back),
``monitor_results`` (``mprtm monitor`` signals per version and run) and ``admin_alerts``
(alerts clinicians never see).

Revision ID: 0008_model_registry
Revises: 0007_incremental_nightly
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_model_registry"
down_revision: str | None = "0007_incremental_nightly"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACTIVE = sa.text("state = 'active'")


def upgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("state", sa.String(length=20), nullable=False, server_default="candidate")
        )
        batch_op.add_column(
            sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=True)
        )
    op.execute("UPDATE model_versions SET state = 'retired'")
    op.execute(
        "UPDATE model_versions SET state = 'active' WHERE id = (SELECT MAX(id) FROM model_versions)"
    )
    op.create_index(
        "uq_model_versions_one_active",
        "model_versions",
        ["state"],
        unique=True,
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )
    op.create_table(
        "model_version_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("from_state", sa.String(length=20), nullable=True),
        sa.Column("to_state", sa.String(length=20), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_model_version_events_model_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_version_events")),
    )
    op.create_index(
        op.f("ix_model_version_events_model_version_id"),
        "model_version_events",
        ["model_version_id"],
    )
    op.create_table(
        "model_validations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_model_validations_model_version_id_model_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_validations")),
    )
    op.create_index(
        op.f("ix_model_validations_model_version_id"), "model_validations", ["model_version_id"]
    )
    op.create_table(
        "shadow_predictions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("patient_fhir_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("probabilities", sa.JSON(), nullable=False),
        sa.Column("tiers", sa.JSON(), nullable=False),
        sa.Column("fibrosis_burden", sa.Float(), nullable=True),
        sa.Column("input_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("would_alert", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["batch_runs.id"],
            name=op.f("fk_shadow_predictions_run_id_batch_runs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_shadow_predictions_model_version_id_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shadow_predictions")),
        sa.UniqueConstraint(
            "run_id",
            "model_version_id",
            "patient_fhir_id",
            name=op.f("uq_shadow_predictions_run_id_model_version_id_patient_fhir_id"),
        ),
    )
    op.create_index(
        op.f("ix_shadow_predictions_model_version_id"), "shadow_predictions", ["model_version_id"]
    )
    op.create_table(
        "monitor_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("signals", sa.JSON(), nullable=False),
        sa.Column("crossed", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["batch_runs.id"],
            name=op.f("fk_monitor_results_run_id_batch_runs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_monitor_results_model_version_id_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitor_results")),
    )
    op.create_index(op.f("ix_monitor_results_created_at"), "monitor_results", ["created_at"])
    op.create_index(
        op.f("ix_monitor_results_model_version_id"), "monitor_results", ["model_version_id"]
    )
    op.create_table(
        "admin_alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("open_key", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_admin_alerts_model_version_id_model_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["batch_runs.id"],
            name=op.f("fk_admin_alerts_run_id_batch_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_alerts")),
        sa.UniqueConstraint("open_key", name=op.f("uq_admin_alerts_open_key")),
    )
    op.create_index(op.f("ix_admin_alerts_created_at"), "admin_alerts", ["created_at"])
    op.create_index(op.f("ix_admin_alerts_status"), "admin_alerts", ["status"])


def downgrade() -> None:
    op.drop_index(op.f("ix_admin_alerts_status"), table_name="admin_alerts")
    op.drop_index(op.f("ix_admin_alerts_created_at"), table_name="admin_alerts")
    op.drop_table("admin_alerts")
    op.drop_index(op.f("ix_monitor_results_model_version_id"), table_name="monitor_results")
    op.drop_index(op.f("ix_monitor_results_created_at"), table_name="monitor_results")
    op.drop_table("monitor_results")
    op.drop_index(op.f("ix_shadow_predictions_model_version_id"), table_name="shadow_predictions")
    op.drop_table("shadow_predictions")
    op.drop_index(op.f("ix_model_validations_model_version_id"), table_name="model_validations")
    op.drop_table("model_validations")
    op.drop_index(
        op.f("ix_model_version_events_model_version_id"), table_name="model_version_events"
    )
    op.drop_table("model_version_events")
    op.drop_index("uq_model_versions_one_active", table_name="model_versions")
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("state_changed_at")
        batch_op.drop_column("state")
