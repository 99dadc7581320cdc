"""Alembic migrations (run with `evoucher db upgrade`)."""
