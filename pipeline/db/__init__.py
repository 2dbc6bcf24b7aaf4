"""Database access: schema, engine, and one module per table family."""
