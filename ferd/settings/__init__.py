"""The parameters' schema (pydantic; bounds; no registry lookups), the one registry of methods by name with their
traits, and the one parameter fingerprint. Imports only :mod:`ferd.core`."""
