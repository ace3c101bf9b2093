"""Accuracy against SNR and length, with intervals, CSV/JSON files and plots."""
