"""Hardware targets. Each is registered in the `scaleflow.hardware` entry-point group."""
