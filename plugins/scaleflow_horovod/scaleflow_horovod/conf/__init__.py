"""Config group files shipped by the Horovod plugin (joined to Hydra's search path by the CLI)."""
