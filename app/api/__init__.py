"""HTTP API blueprints, one per caller."""
