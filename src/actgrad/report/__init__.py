"""The report: its tables (tables.py), its sections (sections.py), and the answers to the
lecture's and d2l's questions, in words read off the metrics (answers.py)."""
