"""Celery tasks of Bouncer: thin wrappers that take ids and call domain functions in ``service``."""
