"""Errors that end a command with exit status 4: a remote service could not do what was asked."""

from __future__ import annotations


class ServiceError(RuntimeError):
    """A remote service (the object store, the Kubeflow Pipelines API) could not be reached or refused the request
    after its retries: one line naming the service and the reason, exit status 4."""

    kind = "service"  # as the error line names it: "<kind> error: …"
