"""The HTTP side: Flask application factory, authentication, logs, metrics and JSON encoding."""
