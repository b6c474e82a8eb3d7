"""The write API (DESIGN.md section 12): create, change and delete monitors, create and delete
silences, apply a monitors file, with the command line's validation and messages.

auth.AuthMiddleware lets only a web.tokens token of scope write reach these handlers, and puts
its name in request.state.actor, which the audit log records (sitewatch/manage/audit.py) in the
change's own transaction. A handler reads the body on the event loop, then does the validation
and the database work on Starlette's thread pool, as the read handlers do. Refusals answer JSON
`{"error": ..., "field": ...}`: 400 for bad input, 404 for what does not exist, 409 for a name or
URL already taken (errors.Conflict), 415 for a body that is not JSON or YAML.
"""

import json

import yaml
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from .. import apply, monitorcli
from ..alerts import cli as alerts_cli
from ..alerts import store as alerts_store
from ..alerts.settings import default_channels
from ..check import push
from ..db import store
from ..errors import BadInput, Conflict, Missing
from ..manage import audit
from ..manage.entries import check_channels_known, refuse_push
from ..manage.importfile import YamlLoader, parse_import
from ..redact import redact_url
from ..urlspec import make_entry

MAX_BODY = 2 * 1024 * 1024           # one monitor: a request body of its own is at most 1 MiB
MAX_APPLY_BODY = 64 * 1024 * 1024    # a monitors file: 100,000 entries are about 10 MB
JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
HOW = "`sitewatch url add` (the write API adds no push monitor: each one's token is shown once)"


class Refused(Exception):
    """A refusal with its status: answered as {"error": ..., "field": ...}."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.field = status, field


def error_response(status: int, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split()), "field": field}, status_code=status,
                        headers={"Cache-Control": "no-store"})


async def _text(request: Request, limit: int) -> tuple[str, bool]:
    """The body as text, and whether it is JSON (else YAML). A form (urlencoded, multipart) or
    text/plain, which a page elsewhere can post cross-site without asking, is refused: 415."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    is_json = media in JSON_TYPES or media.endswith("+json")
    if not is_json and media not in YAML_TYPES:
        raise Refused(415, f"a write takes a JSON or YAML body (Content-Type application/json or "
                           f"application/yaml), got {media or 'no Content-Type'!r}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"the body is larger than {limit // (1024 * 1024)} MiB")
        chunks.append(chunk)
    try:
        return b"".join(chunks).decode("utf-8"), is_json
    except UnicodeDecodeError:
        raise Refused(400, "the body is not UTF-8 text") from None


async def _mapping(request: Request) -> dict:
    """A JSON or YAML mapping, its keys as the import format spells options (max-redirects)."""
    text, is_json = await _text(request, MAX_BODY)
    try:
        data = json.loads(text) if is_json else yaml.load(text, Loader=YamlLoader)  # noqa: S506 - safe loader
    except (ValueError, yaml.YAMLError, RecursionError) as e:
        why = " ".join(str(e).split()) if is_json else "malformed YAML"
        raise Refused(400, f"the body is not valid {'JSON' if is_json else 'YAML'}: {why}") from None
    if not isinstance(data, dict):
        raise Refused(400, "the body must be a JSON or YAML object")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


def _id(request: Request, what: str) -> int:
    text = request.path_params["item_id"]
    if not (text.isascii() and text.isdecimal() and 1 <= int(text) < 2 ** 63):
        raise Refused(404, f"no {what} with ID {text[:40]!r}")
    return int(text)


def _flag(request: Request, name: str) -> bool:
    value = (request.query_params.get(name) or "0").lower()
    if value not in ("0", "1", "true", "false"):
        raise Refused(400, f"{name} must be 1 or 0", field=name)
    return value in ("1", "true")


def routes(cfg, pool) -> list[Route]:
    """The write routes, on the app's routing table next to the reads of the same paths."""

    async def run(request: Request, work, *args):
        """The handler's body: `work(conn, actor, *args)` on the thread pool, refusals answered."""
        actor = request.state.actor

        def job():
            with pool.connection() as conn:
                return work(conn, actor, *args)
        try:
            return await run_in_threadpool(job)
        except Conflict as e:
            return error_response(409, str(e), e.field)
        except Missing as e:
            return error_response(404, str(e), e.field)
        except BadInput as e:
            return error_response(400, str(e), e.field)

    def answered(handler):
        async def endpoint(request: Request):
            try:
                return await handler(request)
            except Refused as e:
                return error_response(e.status, str(e), e.field)
        return endpoint

    def entry_of(options: dict):
        entry = make_entry(options, cfg.check)
        refuse_push([entry], HOW)
        check_channels_known([entry], cfg)
        return entry

    # --- monitors ---

    def add(conn, actor, options):
        entry = entry_of(options)
        url_id = store.add_url(conn, entry, audit.on_add(actor, entry))
        return JSONResponse({"id": url_id, "url": redact_url(entry.url), "name": entry.name,
                             "period": entry.period}, status_code=201,
                            headers={"Location": f"/api/v1/urls/{url_id}"})

    def change(conn, actor, url_id, changes):
        def new_entry(stored):
            options = monitorcli.merged_options(stored, {}, [])
            if not push.is_push(stored["url"]):
                options.update(monitorcli.expressions_of(stored))
            for key, value in changes.items():
                if key in ("body", "json", "send"):       # a new body replaces the old, of either kind
                    for old in ("body", "json", "send"):
                        options.pop(old, None)
                options[key] = value
            if push.is_push(options.get("url") or "") != push.is_push(stored["url"]):
                raise BadInput("a monitor cannot change between push:// and a checked URL: remove it and "
                               "add the new one", field="url")
            return entry_of(options) if not push.is_push(stored["url"]) else _push_entry(options)
        before, entry = store.update_url(conn, url_id, new_entry, audit.on_update(actor))
        changed = sorted(audit.changes(before, entry.as_row())[1])
        return JSONResponse({"id": url_id, "changed": changed})

    def _push_entry(options):
        entry = make_entry(options, cfg.check)
        check_channels_known([entry], cfg)
        return entry

    def remove(conn, actor, url_id):
        closed = store.remove_url(conn, url_id, default_channels(cfg), audit.on_remove(actor))
        return JSONResponse({"id": url_id, "removed": True, "closed_incident": bool(closed)})

    async def post_url(request: Request):
        return await run(request, add, await _mapping(request))

    async def patch_url(request: Request):
        url_id = _id(request, "URL")
        changes = await _mapping(request)
        if not changes:
            raise Refused(400, "nothing to change: give at least one option")
        return await run(request, change, url_id, changes)

    async def delete_url(request: Request):
        return await run(request, remove, _id(request, "URL"))

    # --- silences ---

    def silence(conn, actor, body):
        unknown = sorted(set(body) - {"pattern", "for", "reason"})
        if unknown:
            raise BadInput(f"unknown key {unknown[0]!r} (known: pattern, for, reason)", field=unknown[0])
        wanted = alerts_cli.silence_request(body.get("pattern"), body.get("for"), body.get("reason"))
        try:
            pattern = monitorcli.monitor_url(conn, wanted["pattern"])
        except BadInput as e:
            raise Missing(str(e), field="pattern") from None
        alerts_cli.refuse_name_glob(conn, pattern)
        found = alerts_store.add_silence(conn, pattern, wanted["seconds"], wanted["reason"],
                                         audit.on_silence_add(actor))
        return JSONResponse({"id": found["id"], "pattern": redact_url(pattern),
                             "starts_at": found["starts_at"].isoformat(), "ends_at": found["ends_at"].isoformat(),
                             "reason": wanted["reason"]}, status_code=201)

    def unsilence(conn, actor, silence_id):
        found = alerts_store.end_silence(conn, silence_id, audit.on_silence_remove(actor))
        if found is None:
            raise Missing(f"no silence with id {silence_id} (see silence list)")
        return JSONResponse({"id": silence_id, "ended": True, "pattern": redact_url(found["pattern"])})

    async def post_silence(request: Request):
        return await run(request, silence, await _mapping(request))

    async def delete_silence(request: Request):
        return await run(request, unsilence, _id(request, "silence"))

    # --- apply ---

    def apply_file(conn, actor, text, prune, dry_run, as_text):
        # push:// entries as `sitewatch apply` takes them: added with no token shown (url show-token)
        entries = parse_import(text, "body", cfg.check)
        check_channels_known(entries, cfg)
        plan = apply.plan_and_apply(conn, entries, default_channels(cfg), prune, dry_run,
                                    audit.on_apply(actor, prune))
        text = "\n".join(plan.lines or ["no changes"]) + "\n"
        if as_text:
            return PlainTextResponse(text)
        return JSONResponse({"dry_run": dry_run, "prune": prune, "added": len(plan.added),
                             "changed": len(plan.changed), "removed": len(plan.removed),
                             "plan": plan.lines, "text": text})

    async def post_apply(request: Request):
        prune, dry_run = _flag(request, "prune"), _flag(request, "dry_run")
        text, _ = await _text(request, MAX_APPLY_BODY)
        as_text = request.headers.get("accept", "").split(",")[0].strip().startswith("text/plain")
        return await run(request, apply_file, text, prune, dry_run, as_text)

    return [
        Route("/api/v1/urls", answered(post_url), methods=["POST"]),
        Route("/api/v1/urls/{item_id}", answered(patch_url), methods=["PATCH"]),
        Route("/api/v1/urls/{item_id}", answered(delete_url), methods=["DELETE"]),
        Route("/api/v1/silences", answered(post_silence), methods=["POST"]),
        Route("/api/v1/silences/{item_id}", answered(delete_silence), methods=["DELETE"]),
        Route("/api/v1/apply", answered(post_apply), methods=["POST"]),
    ]
