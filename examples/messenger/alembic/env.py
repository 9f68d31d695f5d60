"""Alembic runs the migrations on DATABASE_URL (a postgresql:// URL)."""

from __future__ import annotations

import os

from alembic import context
from messenger.db import engine_url
from messenger.models import Base
from sqlalchemy import create_engine

engine = create_engine(engine_url(os.environ["DATABASE_URL"]))
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()
