"""The lecture's MLP, every seed of a variant at once: its weights (network.py), its training
engine (engine.py) and what is read while it trains (probes.py), its seeds trained as tasks
(training.py), its metrics (metrics.py) and figures (figures.py), BatchNorm's statistics
calibrated and folded (calibration.py), and its MLflow model (served.py)."""
