"""Built-in models. Each is registered in the `scaleflow.models` entry-point group."""
