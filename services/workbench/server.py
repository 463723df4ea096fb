"""``fraudstream workbench``: the case store migrated, alerts taken in beside the page, the
page served on the configured address until SIGTERM."""

from __future__ import annotations

import threading

import uvicorn

from services.clients.feedback import FeedbackProducer
from services.core.settings import Settings
from services.workbench import intake
from services.workbench.app import create_app
from services.workbench.store import default_url, engine


def database_url(settings: Settings) -> str:
    given = settings.workbench.database_url
    return given.get_secret_value() if given else default_url(settings.state_dir)


def serve(settings: Settings) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    store = engine(database_url(settings))
    stop, health = threading.Event(), intake.Health()
    taking = threading.Thread(target=intake.run, args=(settings, store, stop, health),
                              daemon=True, name="alert-intake")  # fmt: skip
    taking.start()
    feedback = FeedbackProducer(settings)
    try:
        app = create_app(settings, store, feedback, health)
        # Open queues hold event streams: shutdown does not wait for them to end.
        uvicorn.run(app, host=settings.workbench.host, port=settings.workbench.port,
                    log_level="warning", server_header=False,
                    timeout_graceful_shutdown=5)  # fmt: skip
    finally:
        stop.set()
        taking.join(10)
        feedback.close(10)
