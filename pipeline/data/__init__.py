"""Data in, windows out: one loader per format (the datasets module dispatches), the embedded motion set, windowing, and the leakage-safe split."""
