"""What people see of a run: the live table or log lines, Prometheus and metrics.json, status,
report, profiling, and doctor."""
