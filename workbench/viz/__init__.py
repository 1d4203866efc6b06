"""Figures: pure functions of traces / clips → plotly Figures or images (never displayed here)."""
