"""Data in, windows out: one loader module per format (edge_impulse, csv_table, npz; ``load`` dispatches), the embedded motion set, windowing, and the leakage-safe split."""
