"""Exporters. Each is registered in the `scaleflow.exporters` entry-point group."""
