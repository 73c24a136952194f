"""Restore drills: prove that each database's latest good backup actually restores.

`run.drill_entries` drills entries (restore, checks, comparison with the previous drill, the result
and its alerts recorded in one transaction); `run.plan_drills` decides which are due. The Dagster
job (`defs.drill_job`) and `backup-pipeline drill` both call them.
"""
