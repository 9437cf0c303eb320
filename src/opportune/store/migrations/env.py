"""Alembic environment: runs with the connection that ``opportune.store.db.migrate`` passes."""

from __future__ import annotations

from alembic import context

from opportune.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only via `alembic` CLI, which we do not ship
    raise RuntimeError("run migrations with `opportune migrate`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
