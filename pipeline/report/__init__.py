"""The report stage: the document (document.py), its sections, and its plots."""
