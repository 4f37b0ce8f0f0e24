"""Planning: predict a run's topology, step time and scaling from its config alone (no TensorFlow).

    topology.py     hardware figures and the layout a strategy gives (hosts, workers, replicas, pipelines)
    cost_model.py   step time = compute + ring all-reduce + per-step overhead; scaling; memory
    quantities.py   the seed model's four quantities P, Q, C, L
    report.py       `mode=plan`: everything above for one config, plan.json, the recommendation
    calibration.py  `mode=calibrate`: measures this machine and writes a hardware profile
"""
