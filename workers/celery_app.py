"""The worker's entry point: ``celery -A workers.celery_app:celery worker``."""

from service.app import create_app

flask_app = create_app()
celery = flask_app.extensions["celery"]
