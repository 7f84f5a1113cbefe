"""Background jobs: the job functions (one module per domain), the queues that run them (Celery, or
in-process on the embedded default) and the Celery app (``conduit worker``, ``conduit beat``)."""
