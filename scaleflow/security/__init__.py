"""Data protection: secrets redaction, config target checks, audit, auth, checkpoints, crypto.

One concept per module:
    redact.py       secrets (`${oc.env:...}` values, secret-like keys, URL credentials) become `***`
                    in every artifact, log and summary, while the run uses the real values
    targets.py      a config runs no code: `_target_` outside scaleflow's own callbacks is refused
    audit.py        the append-only, hash-chained audit log (`audit.record(event, **fields)`)
    auth.py         bearer tokens for the server, stored hashed (`auth.check(header, role)`)
    crypto.py       AES-256-GCM files at rest (inputs, checkpoints; sealed exports use it: export/seal.py)
    checkpoints.py  trainer.encrypt_checkpoints: Keras works on a RAM copy, the disk holds ciphertext
Masking of records as they are read is data's (data/mask.py). Nothing here imports TensorFlow, and
nothing here imports scaleflow's higher layers (README, Architecture): data, export and the run
record all use this package.
"""
