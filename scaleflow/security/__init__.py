"""Data protection: secrets redaction, config target checks, integrity, audit, auth, masking, crypto.

One concept per module:
    redact.py   secrets (`${oc.env:...}` values, secret-like keys, URL credentials) become `***`
                in every artifact, log and summary, while the run uses the real values
    targets.py  a config runs no code: `_target_` outside scaleflow's own callbacks is refused
    audit.py    the append-only, hash-chained audit log (`audit.record(event, **fields)`)
    auth.py     bearer tokens for the server, stored hashed (`auth.check(header, role)`)
    mask.py     per-column masking of records as they are read (drop, hash, bucket, noise)
    crypto.py   AES-256-GCM files at rest (inputs, checkpoints, sealed exports)
Nothing here imports TensorFlow.
"""
