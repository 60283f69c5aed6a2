"""openxapi: an open implementation of the XenServer management API (XenAPI)."""

__version__ = "0.1.0"
