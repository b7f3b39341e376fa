"""The bottom layer: leaves every other layer may use — safe parameter YAML, seeded streams, registries by name,
atomic writes and safe checkpoints, storage, the image by digest, the dataset catalogue, provenance, the
environment variables ferd obeys, kill points, tracking, optional extras. Imports nothing else of ferd."""
