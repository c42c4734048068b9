"""The flash / eval stage on a device (stage.py) and the scoring of its results (scoring.py)."""
