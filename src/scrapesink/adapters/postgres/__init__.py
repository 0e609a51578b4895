"""PostgreSQL adapters: pool and error translation, schema, migrations, stores."""
