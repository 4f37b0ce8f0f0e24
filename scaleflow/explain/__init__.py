"""Explaining a trained model to people: attributions (attributions.py) and what they show (report.py)."""
