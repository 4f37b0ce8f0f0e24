"""`mode=serve`: scaleflow's exports on KServe's Python model server, speaking TF Serving's REST API.

One concept per module:

    settings.py     what a server process is told (a picklable copy of `serve.*`)
    repository.py   the version directories: poll, verify, load, warm up, unload; labels
    batcher.py      server-side dynamic batching of concurrent requests
    drift.py        input drift per feature against the export's training statistics (PSI)
    metrics.py      Prometheus metrics labelled with the model identity
    tfserving.py    TF Serving's REST bodies (row `instances`, columnar `inputs`) <-> arrays
    model.py        the KServe model: one name, its versions, predict
    app.py          routes, the request hook chain (body limit, metrics; auth plugs in here), the server
"""
