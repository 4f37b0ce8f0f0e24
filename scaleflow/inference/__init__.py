"""Using a trained model: which one and on what data (source.py, no TensorFlow), running it over
records (scoring.py), what its outputs mean per task (metrics.py, outputs.py)."""
