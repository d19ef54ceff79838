"""The REST API (FastAPI): ``create_app`` builds it, OpenAPI is served at ``/docs``."""
