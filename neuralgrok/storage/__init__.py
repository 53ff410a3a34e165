"""What the package writes to disk: crash-safe files, TOML and strict JSON (:mod:`~neuralgrok.storage.files`),
and checkpoints that carry their checksum (:mod:`~neuralgrok.storage.checkpoints`)."""
