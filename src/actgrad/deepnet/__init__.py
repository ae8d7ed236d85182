"""The lecture's deep network: built as the notebook builds it (network.py), trained (run.py),
read (probes.py), written (metrics.py) and drawn (figures.py)."""
