"""The train stage (stage.py) and its device-aware search (search.py)."""
