"""Maintenance of a deployed Airflow: verified backups, metadata-DB cleanup, log retention.

Every action is split into a plan (what would be done; changes nothing) and an execution of that
plan; both are described by a :class:`~airflow_ops.maintenance.report.Report`, which the CLI prints
(text or --json), the ops store keeps as the audit record, and the service turns into metrics.
"""
