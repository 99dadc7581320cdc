"""Durable models, repositories and the ephemeral store."""
