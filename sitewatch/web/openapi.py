"""GET /api/v1/openapi.json: the OpenAPI 3.1 description of every /api/v1 endpoint, read and
write (DESIGN.md section 12). Written by hand, next to the handlers it describes (app.py,
writes.py); tests/test_api_openapi.py validates it and calls every operation it lists on a
live server, so an endpoint missing here, or described here and missing there, fails a test.
"""

from functools import cache

from .. import __version__


def _nullable(kind: str, **more) -> dict:
    return {"type": [kind, "null"], **more}


def _object(required: dict, optional: dict | None = None) -> dict:
    return {"type": "object", "required": sorted(required), "properties": {**required, **(optional or {})}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


NUMBER, INTEGER, STRING, BOOLEAN = {"type": "number"}, {"type": "integer"}, {"type": "string"}, {"type": "boolean"}
TIME = {"type": "string", "format": "date-time"}
TIME_OR_NULL = _nullable("string", format="date-time")
REGIONS = {"type": "object", "additionalProperties": _ref("Region")}     # region name -> Region
STATE_FILTER = {"type": "string", "enum": ["up", "degraded", "partial", "down", "unknown"]}

SCHEMAS = {
    "Error": _object({"error": STRING}, {"field": _nullable("string")}),
    "Summary": {"type": "object", "required": ["urls", "up", "down", "degraded", "partial", "unknown"],
                "properties": {k: INTEGER for k in ("urls", "up", "down", "degraded", "partial", "unknown")}},
    "UrlItem": _object({
        "id": INTEGER, "url": STRING, "name": _nullable("string"), "period": INTEGER,
        "state": {"type": "string", "enum": ["unknown", "up", "degraded", "down", "partial", "maintenance"]},
        "since": TIME_OR_NULL, "uptime_24h": _nullable("number"), "uptime_7d": _nullable("number"),
        "uptime_30d": _nullable("number"), "coverage_24h": _nullable("number"), "p95_ms_24h": _nullable("number"),
        "last_check_at": TIME_OR_NULL, "last_ok": _nullable("boolean"), "last_status_code": _nullable("integer"),
        "last_response_time_ms": _nullable("number"), "last_error_kind": _nullable("string"),
        "last_error": _nullable("string"), "cert_days_left": _nullable("integer")}),
    "UrlPage": _object({"total": INTEGER, "limit": INTEGER, "offset": INTEGER, "next_after": _nullable("string"),
                        "items": {"type": "array", "items": _ref("UrlItem")}}),
    "UrlDetail": {"allOf": [_ref("UrlItem"), _object({"created_at": TIME, "regex": _nullable("string"),
                                                       "request": {"type": "object"}},
                                                      {"regions": REGIONS})]},
    # a URL with regions: each region's row (no `regions` key for a URL without regions)
    "Region": _object({"state": {"type": "string", "enum": ["unknown", "up", "degraded", "down", "absent"]},
                       "since": TIME_OR_NULL, "last_error_kind": _nullable("string"), "last_error": _nullable("string"),
                       "p95_ms_24h": _nullable("number"), "uptime_24h": _nullable("number"),
                       "uptime_7d": _nullable("number"), "uptime_30d": _nullable("number")}),
    "Check": _object({"scheduled_at": TIME, "started_at": TIME_OR_NULL, "ok": _nullable("boolean"),
                      "status_code": _nullable("integer"), "response_time_ms": _nullable("number"),
                      "error_kind": _nullable("string"), "error": _nullable("string")}),
    "Checks": _object({"url_id": INTEGER, "items": {"type": "array", "items": _ref("Check")},
                       "next_before": TIME_OR_NULL}),
    "Uptime": _object({"url_id": INTEGER, "windows": {"type": "object"}, "p95_ms_24h": _nullable("number")}),
    "Daily": _object({"url_id": INTEGER, "days": {"type": "array", "items": _object(
        {"date": {"type": "string", "format": "date"}, "ok": INTEGER, "failed": INTEGER,
         "uptime": _nullable("number")})}}),
    "Incident": _object({"id": INTEGER, "url_id": _nullable("integer"), "url": _nullable("string"),
                         "started_at": TIME, "ended_at": TIME_OR_NULL, "duration_s": INTEGER,
                         "failed_checks": INTEGER}),
    "AuditRow": _object({"id": INTEGER, "at": TIME, "actor": STRING, "action": STRING,
                         "target": _nullable("string"), "before": {"type": ["object", "null"]},
                         "after": {"type": ["object", "null"]}}),
    "Audit": _object({"limit": INTEGER, "items": {"type": "array", "items": _ref("AuditRow")}}),
    "Incidents": _object({"limit": INTEGER, "offset": INTEGER, "items": {"type": "array", "items": _ref("Incident")}}),
    "Monitor": {"type": "object", "required": ["url"], "description":
                "A monitor in the `url import`/`apply` format (README \"Check definitions\"); keys may be "
                "written with - or _. Keys left out take their defaults.",
                "properties": {"url": STRING, "name": STRING, "period": INTEGER, "regex": STRING,
                               "timeout": NUMBER, "method": STRING, "expected-status": STRING,
                               "max-redirects": INTEGER, "verify-tls": BOOLEAN, "failure-threshold": INTEGER,
                               "success-threshold": INTEGER, "notify": {}, "assert": {}, "degraded": {},
                               "headers": {}, "body": STRING, "json": {}, "bearer": STRING,
                               "client-cert": STRING, "client-key": STRING, "ip-version": {}, "send": STRING,
                               "expect": STRING}},
    "MonitorChange": {"type": "object", "description": "Any keys of Monitor: each given replaces the stored "
                      "value (null: its default); the others stay. History, state and incidents stay."},
    "Created": _object({"id": INTEGER, "url": STRING, "name": _nullable("string"), "period": INTEGER}),
    "Changed": _object({"id": INTEGER, "changed": {"type": "array", "items": STRING}}),
    "Removed": _object({"id": INTEGER, "removed": BOOLEAN, "closed_incident": BOOLEAN}),
    "SilenceRequest": _object({"pattern": STRING, "for": STRING}, {"reason": STRING}),
    "Silence": _object({"id": INTEGER, "pattern": STRING, "starts_at": TIME, "ends_at": TIME,
                        "reason": _nullable("string")}),
    "SilenceEnded": _object({"id": INTEGER, "ended": BOOLEAN, "pattern": STRING}),
    "Plan": _object({"dry_run": BOOLEAN, "prune": BOOLEAN, "added": INTEGER, "changed": INTEGER,
                     "removed": INTEGER, "plan": {"type": "array", "items": STRING}, "text": STRING}),
}


def _json_response(description: str, schema: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _errors(*codes: int) -> dict:
    why = {400: "bad input: `field` names the option", 401: "no valid token", 403: "a read token on a write",
           404: "no such thing (or the write API is off: no write token configured)",
           409: "the name or URL is taken", 413: "the body is too large",
           415: "the body is not JSON or YAML (forms are refused)", 429: "too many failed authentications"}
    return {str(code): _json_response(why[code], "Error") for code in codes}


def _param(name: str, where: str, schema: dict, description: str = "", required: bool = False) -> dict:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema,
            "description": description}


ID = _param("id", "path", {"type": "integer", "minimum": 1}, "the URL's ID")
LIMIT = _param("limit", "query", {"type": "integer", "minimum": 1}, "items at most")
OFFSET = _param("offset", "query", {"type": "integer", "minimum": 0}, "items skipped")
READ = [{}, {"bearer": []}]         # open unless web.auth is set
WRITE = [{"bearer": []}]
BODY_TYPES = ("application/json", "application/yaml")


def _body(schema: str) -> dict:
    return {"required": True, "content": {kind: {"schema": _ref(schema)} for kind in BODY_TYPES}}


def _read(summary: str, schema: str, *parameters, errors=(400, 401, 404)) -> dict:
    return {"get": {"summary": summary, "security": READ, "parameters": list(parameters),
                    "responses": {"200": _json_response("OK", schema), **_errors(*errors)}}}


def _write(summary: str, status: int, schema: str, body: str | None, *parameters, errors=()) -> dict:
    operation = {"summary": summary, "security": WRITE, "parameters": list(parameters),
                 "responses": {str(status): _json_response("done", schema),
                               **_errors(400, 401, 403, 404, 429, *errors)}}
    if body:
        operation["requestBody"] = _body(body)
    return operation


@cache
def document() -> dict:
    paths = {
        "/api/v1/summary": _read("counts of URLs by state", "Summary", errors=(401,)),
        "/api/v1/urls": {
            **_read("URLs, down first, a page at a time", "UrlPage",
                    _param("state", "query", STATE_FILTER),
                    _param("q", "query", STRING, "search in URL and name"), LIMIT, OFFSET,
                    _param("after", "query", STRING, "next_after of the page before"), errors=(400, 401, 429)),
            "post": _write("add a monitor, as `url add` does", 201, "Created", "Monitor", errors=(409, 413, 415)),
        },
        "/api/v1/urls/{id}": {
            **_read("one URL, with its request settings (secrets redacted)", "UrlDetail", ID),
            "patch": _write("change a monitor in place, as `url update` does", 200, "Changed", "MonitorChange",
                            ID, errors=(409, 413, 415)),
            "delete": _write("remove a monitor, as `url remove` does", 200, "Removed", None, ID),
        },
        "/api/v1/urls/{id}/checks": _read("a URL's results, newest first", "Checks", ID,
                                          _param("limit", "query", {"type": "integer", "minimum": 1}),
                                          _param("before", "query", TIME)),
        "/api/v1/urls/{id}/uptime": _read("a URL's uptime over windows", "Uptime", ID,
                                          _param("windows", "query", STRING, "e.g. 24h,7d,30d,90d")),
        "/api/v1/urls/{id}/daily": _read("a URL's days", "Daily", ID,
                                         _param("days", "query", {"type": "integer", "minimum": 1, "maximum": 366})),
        "/api/v1/incidents": _read("incidents, open first", "Incidents",
                                   _param("open", "query", {"type": "string", "enum": ["true", "false"]}),
                                   _param("url_id", "query", {"type": "integer", "minimum": 1}), LIMIT, OFFSET,
                                   errors=(400, 401, 429)),
        "/api/v1/audit": _read("the audit log, newest first: who changed what (secrets redacted)", "Audit",
                               LIMIT, errors=(400, 401)),
        "/api/v1/silences": {"post": _write("silence a URL, a name or a glob, as `silence add` does", 201,
                                            "Silence", "SilenceRequest", errors=(413, 415))},
        "/api/v1/silences/{id}": {"delete": _write("end a silence now, as `silence remove` does", 200,
                                                   "SilenceEnded", None,
                                                   _param("id", "path", {"type": "integer", "minimum": 1}))},
        "/api/v1/apply": {"post": {
            "summary": "make the monitors match a file, as `sitewatch apply` does; the plan as JSON, or as "
                       "text with Accept: text/plain",
            "security": WRITE,
            "parameters": [_param("prune", "query", {"type": "string", "enum": ["0", "1", "true", "false"]},
                                  "also remove monitors the file does not name"),
                           _param("dry_run", "query", {"type": "string", "enum": ["0", "1", "true", "false"]},
                                  "plan only, write nothing")],
            "requestBody": {"required": True, "content": {
                kind: {"schema": {"type": "array", "items": {"oneOf": [STRING, _ref("Monitor")]}}}
                for kind in BODY_TYPES}},
            "responses": {"200": {"description": "the plan", "content": {
                "application/json": {"schema": _ref("Plan")}, "text/plain": {"schema": STRING}}},
                **_errors(400, 401, 403, 404, 413, 415, 429)}}},
        "/api/v1/openapi.json": {"get": {"summary": "this document", "security": READ,
                                         "responses": {"200": {"description": "OpenAPI 3.1", "content": {
                                             "application/json": {"schema": {"type": "object"}}}},
                                             **_errors(401)}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "sitewatch API", "version": __version__,
                 "description": "Reads are open unless web.auth is set (then a web.auth entry or a web.tokens "
                                "token); writes need a web.tokens token of scope write, and exist only when "
                                "one is configured. Errors are {\"error\": ..., \"field\": ...}."},
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
