"""The training run: config -> data -> model -> fit -> export (see `train.run`)."""
