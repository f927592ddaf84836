"""URL → handler. Nothing else lives here."""

from __future__ import annotations

from aiohttp import web

from progress_server.resources import static_dir
from progress_server.web import apidocs, health, metrics, openapi, page, progress, tasks, ws

TASK = "/api/downloads/{task_id}"


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/metrics", metrics.metrics)

    app.router.add_get("/", page.index)
    app.router.add_post("/login", page.login)
    app.router.add_post("/logout", page.logout)
    app.router.add_post("/tasks", page.add_download)
    app.router.add_post(
        "/tasks/{task_id}/{action:pause|resume|cancel|retry|delete}", page.task_action
    )
    app.router.add_static("/static/", static_dir(), name="static", append_version=True)
    app.router.add_get("/api/openapi.json", openapi.openapi_document)
    app.router.add_get("/api/docs", apidocs.api_docs)
    app.router.add_get("/api/docs/{asset}", apidocs.api_docs_asset)

    app.router.add_post("/api/downloads", tasks.create_download)
    app.router.add_get("/api/downloads", tasks.list_downloads)
    app.router.add_get(TASK, tasks.get_download)
    app.router.add_delete(TASK, tasks.delete_download)
    app.router.add_post(TASK + "/cancel", tasks.cancel_download)
    app.router.add_post(TASK + "/retry", tasks.retry_download)
    app.router.add_post(TASK + "/pause", tasks.pause_download)
    app.router.add_post(TASK + "/resume", tasks.resume_download)
    app.router.add_get(TASK + "/file", tasks.download_file)
    app.router.add_get(TASK + "/events", tasks.task_events)

    app.router.add_get("/api/progress", progress.get_progress_batch)
    # Before `{task_id}`, which would otherwise match "ws".
    app.router.add_get("/api/progress/ws", ws.progress_ws)
    app.router.add_get("/api/progress/{task_id}", progress.get_progress)
    app.router.add_get("/api/events", progress.all_events)
