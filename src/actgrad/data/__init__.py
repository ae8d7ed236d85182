"""The names dataset: fetching names.txt (names.py) and the lecture's examples (examples.py)."""
