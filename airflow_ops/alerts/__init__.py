"""Alerting: rules evaluated over the exported samples, routed Alertmanager-style to receivers."""
