"""The scan's phases: sync the jobs file, ingest status reports, plan and evaluate the day's cycles
(with their alerts), archive the reports; and which days a scan owes."""
