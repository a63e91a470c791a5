"""Kubernetes manifests for `airflow-ops serve`; ``generate`` writes prometheusrule.yaml."""
