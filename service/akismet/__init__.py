"""The Akismet-compatible API: existing Akismet clients and plugins work with Bouncer by changing the host."""

from service.akismet.views import bp

__all__ = ["bp"]
