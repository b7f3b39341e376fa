"""What several test files share (imported as ``support.<module>``: pyproject's ``pythonpath = ["tests"]``):
inputs, golden fingerprints, images, fresh venvs, stand-ins of S3, Kubernetes and TCP, the throwaway method,
stage and attack of the extension tests, and the scripts some tests run by path (``hostile_driver.py``,
``ddp_step.py``, ``golden.py``)."""
