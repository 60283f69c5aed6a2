"""Hand-written behaviour, one module per class; importing registers the handlers."""

from openxapi.api.handlers import host, pool, role, session, task, vm  # noqa: F401
