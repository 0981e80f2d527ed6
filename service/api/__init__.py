"""The native JSON API v1: ``views`` (the blueprint), ``schemas`` (request validation), ``openapi``."""
