"""The daily fleet digest: built once from PostgreSQL, rendered for people and written as CSV."""
