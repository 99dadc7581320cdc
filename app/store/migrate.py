"""Run the Alembic migrations programmatically."""
from __future__ import annotations

import logging
import os

# Alembic announces each of its plugins (as it is first imported, just below) and which dialect
# it talks to, at INFO on every command: nine lines of noise in an operator's terminal. The
# migrations it runs stay logged.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
logging.getLogger("alembic.runtime.migration").addFilter(
    lambda record: not record.getMessage().startswith(("Context impl ", "Will assume ")))

from alembic import command  # noqa: E402
from alembic.config import Config as AlembicConfig  # noqa: E402

import migrations  # noqa: E402


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", os.path.dirname(migrations.__file__))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def _scripts():
    """This version's migration scripts (no database is opened)."""
    from alembic.script import ScriptDirectory
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def head_revision() -> str:
    """The revision this version of the service needs (the migrations' single head)."""
    return _scripts().get_current_head()


def known_revision(revision: str) -> bool:
    """Whether `revision` is one of this version's migrations (not one of a newer version)."""
    from alembic.util import CommandError
    try:
        return _scripts().get_revision(revision) is not None
    except CommandError:
        return False


def current_revision(engine) -> str | None:
    """The database's revision, or None when it has no schema yet; connects (SQLAlchemyError
    when the database cannot be reached)."""
    from alembic.runtime.migration import MigrationContext
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
