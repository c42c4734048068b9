"""The audit stage: checks of the data and the split, grouped by family (leakage, confounding, quality)."""
