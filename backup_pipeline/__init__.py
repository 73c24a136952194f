"""backup_pipeline: watches the database backups of a fleet of remote sites."""

import atexit
import gc

__version__ = "0.1.0"

# A process that imported Dagster and the product holds about a million objects, and at exit the
# interpreter's last garbage collections walk them all: half a second of CPU for every command, code
# server and run worker (measured: `import backup_pipeline.definitions` 1.8 s of CPU, 1.3 s with this).
# Frozen last thing (atexit runs its handlers newest first, and this one is registered as the package
# loads), they are skipped; objects still reachable are freed by reference counting as before.
atexit.register(gc.freeze)
