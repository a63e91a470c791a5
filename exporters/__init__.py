"""Deployment content for `airflow-ops serve` (Prometheus, systemd, Docker, Kubernetes); the only
code here is the generator of kubernetes/prometheusrule.yaml."""
