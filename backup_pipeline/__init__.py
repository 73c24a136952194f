"""backup_pipeline: watches the database backups of a fleet of remote sites."""

__version__ = "0.1.0"
