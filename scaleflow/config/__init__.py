"""Config schema (structured dataclasses), Hydra ConfigStore registration and validation."""
