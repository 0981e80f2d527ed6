"""The native JSON API v1."""

from service.api.views import bp

__all__ = ["bp"]
