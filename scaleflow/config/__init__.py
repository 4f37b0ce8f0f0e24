"""Config schema (structured dataclasses), Hydra ConfigStore registration and the leaf checks of a
value (fields.py, paths.py). The whole config is validated by scaleflow/validation.py."""
