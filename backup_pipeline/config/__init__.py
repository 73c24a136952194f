"""Configuration: settings from the environment, and the jobs file of expected backups."""
