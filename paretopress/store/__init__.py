"""The SQLite store: tables and migrations, the typed access the controller writes through, and its doctor."""
