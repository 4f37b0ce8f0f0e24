"""Sweeps (Hydra multirun): each job returns its objective; the sweep ends with a summary.

    objective.py   the value a sweeper optimises (`sweep.objective`, `sweep.direction`), and the
                   multirun task wrapper that records a failed job instead of stopping the sweep
    summary.py     collects every job's run.json into rows; writes summary.csv and summary.md
    plot.py        objective against each swept parameter (PNG)
    hparams.py     TensorBoard HParams data for the sweep
    callback.py    the Hydra callback (conf/config.yaml `hydra.callbacks`) that writes all of it at
                   the end of every multirun
"""
