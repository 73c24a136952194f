"""Storage shell: PostgreSQL connection, ORM tables, migrations and the queries the scan needs."""
