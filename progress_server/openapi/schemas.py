"""The component schemas of the OpenAPI document: every JSON body the server sends or takes.

The record's and the progress figures' keys come from `progress_server.models`, where the
server builds them; `tests/test_openapi.py` checks the properties against those keys.
"""

from __future__ import annotations

from progress_server.media.job import DEFAULT_FORMAT
from progress_server.models import (
    PROGRESS_KEYS,
    TASK_RECORD_KEYS,
    ErrorType,
    EventName,
    TaskState,
)
from progress_server.openapi.blocks import JSON, extra, nullable, ref
from progress_server.processing.presets import PRESETS

# A split download's parts: `[start, end, done]` each (byte offsets, end exclusive; `done`
# bytes of the part received), in file order; finished neighbours read as one.
SEGMENTS: JSON = {
    "type": "array",
    "items": {
        "type": "array",
        "items": {"type": "integer", "minimum": 0},
        "minItems": 3,
        "maxItems": 3,
    },
}


def schemas() -> JSON:
    states = [s.value for s in TaskState]
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["type", "message"],
                    "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
                }
            },
        },
        "TaskState": {
            "type": "string",
            "enum": states,
            "description": "The guide's states; `paused` is *extra*.",
        },
        "PollingProgress": {
            "type": "object",
            "additionalProperties": False,
            "required": list(PROGRESS_KEYS),
            "properties": {
                "percentage": nullable("number", minimum=0, maximum=100),
                "downloaded_bytes": {"type": "integer", "minimum": 0},
                "total_bytes": nullable("integer", minimum=0),
                "speed_mbps": {"type": "number", "minimum": 0, "description": "10^6 bytes/s"},
                "eta_seconds": nullable("integer", minimum=0),
            },
        },
        "Polling": {
            "type": "object",
            "additionalProperties": False,
            "required": ["task_id", "state", "progress", "timestamp"],
            "properties": {
                "task_id": {"type": "string", "format": "uuid"},
                "state": ref("TaskState"),
                "progress": ref("PollingProgress"),
                "timestamp": {"type": "string", "format": "date-time"},
            },
        },
        "PollingBatch": extra(
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["tasks", "missing"],
                "properties": {
                    "tasks": {"type": "array", "items": ref("Polling")},
                    "missing": {
                        "type": "array",
                        "items": {"type": "string", "format": "uuid"},
                        "description": "The ids asked for that do not exist or belong to "
                        "another key (the two are not told apart), in the order asked.",
                    },
                },
            },
            "one polling response per visible task named, and the ids that are not.",
        ),
        "TaskError": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {
                "type": {"type": "string", "enum": [e.value for e in ErrorType]},
                "message": {"type": "string"},
                "retryable": extra({"type": "boolean"}, "whether the server will retry."),
                "status": extra({"type": "integer"}, "the origin's HTTP status."),
            },
        },
        "Result": {
            "type": "object",
            "required": ["filename", "size_mb", "duration_seconds"],
            "properties": {
                "filename": {"type": "string"},
                "size_mb": {"type": "number", "description": "bytes / 2^20, two decimals"},
                "duration_seconds": nullable("number"),
            },
        },
        "Task": {
            "type": "object",
            "required": list(TASK_RECORD_KEYS),
            "properties": {
                "task_id": {"type": "string", "format": "uuid"},
                "url": {"type": "string"},
                "filename": nullable("string"),
                "state": ref("TaskState"),
                "progress": ref("PollingProgress"),
                "result": {"oneOf": [ref("Result"), {"type": "null"}]},
                "error": {"oneOf": [ref("TaskError"), {"type": "null"}]},
                "created_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"},
                "sha256": extra({"type": "string"}, "the checksum the file must have."),
                "options": extra({"type": "object"}, "per-task options given at submission."),
                "connections": extra(
                    {"type": "integer", "minimum": 1},
                    "while downloading: the connections open to the origin now.",
                ),
                "segments": extra(
                    SEGMENTS,
                    "while a split download runs: its parts, for a multi-part bar.",
                ),
                "node": extra(
                    nullable("string"),
                    "cluster mode only: the node running the task now (null when none).",
                ),
                **_media_task_properties(),
            },
        },
        "TaskList": {
            "type": "object",
            "required": ["tasks", "next_cursor"],
            "properties": {
                "tasks": {"type": "array", "items": ref("Task")},
                "next_cursor": nullable("string"),
            },
        },
        "NewDownload": {
            "type": "object",
            "required": ["url"],
            "additionalProperties": False,
            "properties": {
                "url": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 8192,
                    "pattern": "^[hH][tT][tT][pP][sS]?://[^\\s]+$",
                    "description": "An http:// or https:// URL.",
                },
                # Optional fields take null as "not given", as the parser does.
                "filename": {
                    "type": ["string", "null"],
                    "minLength": 1,
                    "description": "A plain name: no `/`, `\\`, `..`, NUL, leading dot, "
                    "nor over 255 bytes (else 422).",
                },
                "sha256": {"type": ["string", "null"], "pattern": "^[0-9a-fA-F]{64}$"},
                "max_speed_mbps": extra(
                    {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1e6},
                    "a speed limit for this task, in 10^6 bytes/s.",
                ),
                "segments": extra(
                    {"type": ["integer", "null"], "minimum": 1, "maximum": 16},
                    "ranged connections this download may use at once (default: the "
                    "server's --segments).",
                ),
                "post_process": extra(
                    {
                        "type": ["object", "null"],
                        "additionalProperties": False,
                        "properties": {
                            "transcode": {
                                "type": ["string", "null"],
                                "enum": [*sorted(PRESETS), None],
                                "description": "a transcode preset (422 without ffmpeg).",
                            }
                        },
                    },
                    "processing steps for this task.",
                ),
                **_media_request_properties(),
            },
        },
        "Event": {
            "type": "object",
            "required": ["event", "task_id", "timestamp", "seq", "state"],
            "properties": {
                "event": {"type": "string", "enum": [e.value for e in EventName]},
                "task_id": {"type": "string", "format": "uuid"},
                "timestamp": {"type": "string", "format": "date-time"},
                "seq": extra({"type": "integer", "minimum": 1}, "server-wide, increasing."),
                "state": extra(ref("TaskState"), "the task's state after the event."),
                "progress": {"type": "object", "description": "`download.progress`"},
                "result": {"type": "object", "description": "`download.completed`"},
                "error": {
                    "type": "object",
                    "description": "`download.error` (sent once, when the task ends `failed`) "
                    "and `download.retrying`",
                },
                "attempt": extra(
                    {"type": "integer", "minimum": 1},
                    "`download.retrying`: the attempt that failed.",
                ),
                "retry_in_seconds": extra(
                    {"type": "number", "minimum": 0},
                    "`download.retrying`: when the next attempt starts.",
                ),
                "fragments": extra(
                    {
                        "type": "object",
                        "required": ["index", "count"],
                        "properties": {
                            "index": {"type": "integer", "minimum": 1},
                            "count": nullable("integer", minimum=1),
                        },
                    },
                    "`download.progress` of a fragmented (HLS/DASH) media stream.",
                ),
                **_media_event_properties(),
                "connections": extra(
                    {"type": "integer", "minimum": 1},
                    "`download.progress` of a split download: its connections open now.",
                ),
                "segments": extra(SEGMENTS, "`download.progress` of a split download."),
            },
        },
        "EventList": {
            "type": "object",
            "required": ["events"],
            "properties": {"events": {"type": "array", "items": ref("Event")}},
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {"type": "string"},
                "version": {"type": "string"},
                "node": extra({"type": "string"}, "cluster mode: this node's id."),
                "database": extra(
                    {"type": "string", "enum": ["ok", "unreachable"]},
                    "cluster mode: whether this node reaches the shared database.",
                ),
            },
        },
    }


# -- media sources (#13) -------------------------------------------------------------------


def _media_request_properties() -> JSON:
    return {
        "source": extra(
            {"type": ["string", "null"], "enum": ["auto", "http", "media", None]},
            "how the URL is fetched (default `auto`): `http` as a file; `media` through "
            "yt-dlp (site pages, HLS/DASH manifests, pages with `<video>` tags; 422 without "
            "the `[media]` extra); `auto` is `media` where yt-dlp has a site-specific "
            "extractor for the URL, or the URL's path ends in `.m3u8` or `.mpd` (a manifest is "
            "never wanted as a file), or a `format` is given; else `http`.",
        ),
        "format": extra(
            {"type": ["string", "null"], "minLength": 1, "maxLength": 500},
            f"a yt-dlp format selector (default `{DEFAULT_FORMAT}`); one yt-dlp cannot read "
            "is a 422. Media sources only.",
        ),
        "playlist": extra(
            {"type": ["boolean", "null"]},
            "a playlist URL makes a parent task whose entries are tasks of their own "
            "(default true); false takes only the item the URL points at. Media sources only.",
        ),
    }


def _media_task_properties() -> JSON:
    return {
        "source": extra({"type": "string", "enum": ["media"]}, "present on media tasks."),
        "parent_id": extra({"type": "string", "format": "uuid"}, "a playlist entry's parent task."),
        "playlist_index": extra(
            {"type": "integer", "minimum": 1}, "a playlist entry's place in its playlist."
        ),
        "entries": extra(
            {"type": "array", "items": {"type": "string", "format": "uuid"}},
            "a playlist's entries, in playlist order. The parent's progress combines "
            "theirs; it completes when every entry completed and fails when one failed for "
            "good; cancelling it cancels the unfinished ones. It has no file of its own.",
        ),
    }


def _media_event_properties() -> JSON:
    return {
        "entries": extra(
            {"type": "array", "items": {"type": "string", "format": "uuid"}},
            "`download.started` of a playlist's parent once its entries exist.",
        ),
        "parent_id": extra(
            {"type": "string", "format": "uuid"}, "`download.queued` of a playlist entry."
        ),
        "playlist_index": extra(
            {"type": "integer", "minimum": 1}, "`download.queued` of a playlist entry."
        ),
    }
