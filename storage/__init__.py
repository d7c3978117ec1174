"""Storage: every SQL statement, the migrations and the embedded PostgreSQL. Nothing outside
this package imports asyncpg."""
