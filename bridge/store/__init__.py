"""Database access: models, engine, migrations."""
