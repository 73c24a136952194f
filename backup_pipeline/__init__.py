"""backup_pipeline: watches the database backups of a fleet of remote sites."""

import atexit
import gc

__version__ = "0.1.0"

# A process that loads Dagster and the product creates about a million objects, and the garbage
# collector's defaults (a collection every 700 new objects, the oldest generation walked whenever it grew
# by a quarter) made it walk them again and again as they load, and once more at exit: half of the CPU a
# command spends starting (measured: `import backup_pipeline.definitions` 1.78 s of CPU, 1.04 s with
# both lines below; `python -m benchmarks.startup`). Young collections are rarer, which leaves at most
# ten thousand unreachable objects waiting a little longer; and at exit everything is frozen first
# (atexit runs its handlers newest first and this one registers as the package loads, so it runs
# last), so the final collections skip it; objects still reachable are freed by reference counting.
gc.set_threshold(10_000)
atexit.register(gc.freeze)
