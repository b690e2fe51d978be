"""The controller's JSON HTTP API: a WSGI app served by a thread per connection.

Reads are open; requests that change state need ``Authorization: Bearer <token>``.
Bound to 127.0.0.1 unless told otherwise. ``GET /openapi.json`` describes every route.
Bad requests get a 4xx with ``{"error": reason}`` and change nothing. Every byte is
treated as hostile: bodies are JSON objects of a bounded size with no duplicate keys,
validated strictly, and a connection that stalls is closed after ``SOCKET_TIMEOUT_S``.
A write waiting on switches holds only its own thread: reads are served meanwhile.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .fabric import dpid_of, host_ip, host_mac
from .state import RequestError, json_safe

if TYPE_CHECKING:
    from .app import TEController

LOG = logging.getLogger("rlte.controller.api")
SOCKET_TIMEOUT_S = 10.0  # a client silent this long mid-request is disconnected
MAX_CONNECTIONS = 64     # served at once; more are closed at once (each holds a thread)

ERROR = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
WRITE_ERRORS = {"401": {"description": "missing or wrong token"},
                "404": {"description": "this controller runs no policy runtime"},
                "415": {"description": "body not sent as application/json"}}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PolicyUpload(_Body):
    """``PUT /policy``: a bundle directory on the controller's own machine (not the bytes)."""

    path: str = Field(min_length=1, max_length=4096)


class ModeRequest(_Body):
    mode: Literal["shadow", "active"]


class RollbackRequest(_Body):
    version: Optional[str] = Field(None, pattern=r"^[0-9a-f]{12}$")


def _validated(model: type[BaseModel], body: Any, hint: str) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise RequestError(f"{where}: {first['msg']} (send {hint})") from None


RATIOS_SCHEMA = {"type": "array", "items": {"type": "array", "items": {"type": "number", "minimum": 0}}}
OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "rlte controller", "version": "1",
             "description": "Traffic-engineering controller: topology, telemetry and split-ratio routing."},
    "components": {"securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
                   "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "string"}}}}},
    "paths": {
        "/health": {"get": {"summary": "Switches ready or missing, links down, uptime",
                            "responses": {"200": {"description": "all switches ready"},
                                          "503": {"description": "some switch missing"}}}},
        "/topology": {"get": {"summary": "Nodes (dpid, host address), links (port, capacities), pairs and "
                                         "candidate paths", "responses": {"200": {"description": "the model"}}}},
        "/routing": {
            "get": {"summary": "Requested and installed split ratios (pairs × paths), backup paths, links down",
                    "responses": {"200": {"description": "current routing"}}},
            "put": {"summary": "Set split ratios: every pair ('ratios') or some pairs ('pairs'); "
                               "returns after every switch confirmed (barrier)",
                    "security": [{"token": []}],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "additionalProperties": False,
                        "properties": {"ratios": RATIOS_SCHEMA,
                                       "pairs": {"type": "object", "additionalProperties":
                                                 {"type": "array", "items": {"type": "number"}},
                                                 "description": "'origin->destination' -> ratios over its paths"}},
                        "oneOf": [{"required": ["ratios"]}, {"required": ["pairs"]}]}}}},
                    "responses": {"200": {"description": "installed; version and update latency"},
                                  "400": {"description": "invalid ratios or body",
                                          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                                  "401": {"description": "missing or wrong token"},
                                  "404": {"description": "unknown pair"},
                                  "411": {"description": "no Content-Length"},
                                  "413": {"description": "body larger than this network's routing needs"},
                                  "415": {"description": "body not sent as application/json"},
                                  "503": {"description": "another routing change is being installed; "
                                                         "nothing changed, try again"}}}},
        "/stats": {"get": {"summary": "Per-link utilization and the measured traffic matrix (last polling interval)",
                           "responses": {"200": {"description": "telemetry"}}}},
        "/counters": {"get": {"summary": "Cumulative link tx bytes and per-pair ingress bytes with sample times; "
                                         "fresh=1 polls every switch first",
                              "parameters": [{"name": "fresh", "in": "query", "schema": {"type": "boolean"}}],
                              "responses": {"200": {"description": "counters"}}}},
        "/events": {"get": {"summary": "Switch, link and routing events, oldest first",
                            "parameters": [{"name": "since", "in": "query", "schema": {"type": "number"}}],
                            "responses": {"200": {"description": "events"}}}},
        "/policy": {
            "get": {"summary": "The learned policy: version, mode (shadow/active), status (policy, fallback with "
                               "its reason, warming up), deployed versions, decision latency, the last decision",
                    "responses": {"200": {"description": "policy report"}, **WRITE_ERRORS}},
            "put": {"summary": "Deploy a bundle: the body names a bundle directory on the controller's own machine "
                               "(the files are not uploaded); it is checked (network, path set, sha256, format "
                               "version, tensor shapes), copied into the state directory under its version and "
                               "starts in shadow mode (the same version keeps its mode)",
                    "security": [{"token": []}],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "additionalProperties": False, "required": ["path"],
                        "properties": {"path": {"type": "string", "description": "absolute path of the bundle "
                                                                                 "directory on the controller"}}}}}},
                    "responses": {"200": {"description": "deployed; its version"},
                                  "400": {"description": "not a usable bundle for this network: the error names "
                                                         "the problem; nothing changed", **ERROR}, **WRITE_ERRORS}}},
        "/policy/mode": {"post": {
            "summary": "Switch between shadow (record only) and active (install the policy's decisions); "
                       "shadow -> active is the promotion: the policy decides and installs before the answer "
                       "(the controller's --promote-after N/M promotes by itself)",
            "security": [{"token": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False, "required": ["mode"],
                "properties": {"mode": {"enum": ["shadow", "active"]}}}}}},
            "responses": {"200": {"description": "the policy report"},
                          "400": {"description": "bad body, or no policy deployed", **ERROR}, **WRITE_ERRORS}}},
        "/policy/rollback": {"post": {
            "summary": "Back to the version deployed before the current one, or to a named deployed version; "
                       "in active mode that version decides and installs before the answer",
            "security": [{"token": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "additionalProperties": False,
                "properties": {"version": {"type": "string", "pattern": "^[0-9a-f]{12}$"}}}}}},
            "responses": {"200": {"description": "the policy report"},
                          "400": {"description": "no such version, or none to go back to", **ERROR},
                          **WRITE_ERRORS}}},
        "/decisions": {"get": {"summary": "The policy's audit records kept in memory (decisions and mode, deploy, "
                                          "rollback, fallback events), oldest first; the state directory's "
                                          "decisions.jsonl has them all",
                               "parameters": [{"name": "since", "in": "query", "schema": {"type": "number"}}],
                               "responses": {"200": {"description": "audit records"}}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
    },
}


def _array(values: np.ndarray | None) -> list | None:
    return None if values is None else json_safe(np.asarray(values, dtype=np.float64).tolist())


def body_limit(num_pairs: int, k: int, label_bytes: int) -> int:
    """The largest body a routing of this network needs: every ratio written out in full
    (``-1.2345678901234567e-300,`` is 25 bytes) under its pair's label, with room to spare."""
    return 4096 + 2 * num_pairs * (k * 26 + label_bytes + 16)


def parse_json(raw: bytes) -> Any:
    """``raw`` as JSON, refused (RequestError) when it is not: invalid, nested too deeply, a key
    given twice in one object, or a NaN / Infinity literal (not JSON numbers)."""

    def unique_keys(items: list[tuple[str, Any]]) -> dict:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                raise RequestError(f"key {key!r} appears twice in one object")
            seen.add(key)
        return dict(items)

    def no_constant(name: str) -> None:
        raise RequestError(f"{name} is not a JSON number")

    try:
        return json.loads(raw, object_pairs_hook=unique_keys, parse_constant=no_constant)
    except RecursionError:
        raise RequestError("body nests too deeply") from None
    except RequestError:
        raise
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestError(f"body is not JSON: {error}") from None


def bearer_token(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme is case-insensitive in HTTP)."""
    scheme, _, credentials = header.strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None


class Api:
    """WSGI application over one controller."""

    def __init__(self, controller: "TEController", token: str) -> None:
        if not token:
            raise ValueError("the API needs a token for requests that change state")
        self.controller = controller
        self.token = token
        ps = controller.plan.pathset
        labels = max((len(controller.state.pair_label(p).encode()) for p in range(ps.num_pairs)), default=0)
        self.max_body = body_limit(ps.num_pairs, ps.k, labels)
        self.routes: dict[tuple[str, str], Callable[[dict, Any], tuple[int, Any]]] = {
            ("GET", "/health"): self.health,
            ("GET", "/topology"): self.topology,
            ("GET", "/routing"): self.get_routing,
            ("PUT", "/routing"): self.put_routing,
            ("GET", "/stats"): self.stats,
            ("GET", "/counters"): self.counters,
            ("GET", "/events"): self.events,
            ("GET", "/policy"): self.get_policy,
            ("PUT", "/policy"): self.put_policy,
            ("POST", "/policy/mode"): self.policy_mode,
            ("POST", "/policy/rollback"): self.policy_rollback,
            ("GET", "/decisions"): self.decisions,
            ("GET", "/openapi.json"): lambda query, body: (200, OPENAPI),
        }
        self.writes = {("PUT", "/routing"), ("PUT", "/policy"), ("POST", "/policy/mode"),
                       ("POST", "/policy/rollback")}

    def __call__(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/").rstrip("/") or "/"
        try:
            status, payload = self._dispatch(environ, method, path)
        except RequestError as error:
            status, payload = error.status, {"error": str(error)}
        except Exception:  # never let one request take the controller down, nor tell a client its internals
            LOG.exception("API request %s %s failed", method, path)
            status, payload = 500, {"error": "internal error (the controller's log has the details)"}
        data = json.dumps(json_safe(payload)).encode()
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
                  411: "Length Required", 413: "Payload Too Large", 415: "Unsupported Media Type",
                  500: "Internal Server Error", 503: "Service Unavailable"}.get(status, "")
        start_response(f"{status} {reason}", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def _dispatch(self, environ, method: str, path: str) -> tuple[int, Any]:
        handler = self.routes.get((method, path))
        if handler is None:
            if any(p == path for _, p in self.routes):
                allowed = sorted(m for m, p in self.routes if p == path)
                raise RequestError(f"{method} is not allowed on {path}; use {', '.join(allowed)}", 405)
            raise RequestError(f"no such route {path}; see /openapi.json", 404)
        if (method, path) in self.writes:
            supplied = bearer_token(environ.get("HTTP_AUTHORIZATION", "")) or ""
            if not hmac.compare_digest(supplied.encode(), self.token.encode()):
                raise RequestError("this request changes state: send 'Authorization: Bearer <token>'", 401)
        body = None
        if method in ("PUT", "POST"):
            media_type = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
            if media_type != "application/json":
                raise RequestError(f"send the body as Content-Type: application/json, not {media_type or 'none'!r}",
                                   415)
            try:
                length = int(environ.get("CONTENT_LENGTH") or "")
            except ValueError:
                raise RequestError("say the body's size in Content-Length", 411) from None
            if not 0 <= length <= self.max_body:
                raise RequestError(f"a body of {length} bytes is over this network's {self.max_body}-byte limit "
                                   "(every pair's ratios written out in full fit in it)", 413)
            raw = environ["wsgi.input"].read(length)
            if len(raw) < length:
                raise RequestError(f"the body ended after {len(raw)} of {length} bytes")
            body = parse_json(raw)
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        return handler(query, body)

    # ------------------------------------------------------------------ handlers
    def health(self, query, body):
        report = self.controller.health()
        return (200 if report["status"] == "ok" else 503), report

    def topology(self, query, body):
        plan = self.controller.plan
        topo, ps = plan.topology, plan.pathset
        return 200, {
            "name": topo.name, "fingerprint": topo.fingerprint(),
            "capacity_scale": self.controller.state.capacity_scale,
            "nodes": [{"name": name, "dpid": dpid_of(n), "host_ip": host_ip(n), "host_mac": host_mac(n)}
                      for n, name in enumerate(topo.node_names)],
            "links": [{"src": topo.node_names[u], "dst": topo.node_names[v], "port": int(plan.link_port[l]),
                       "capacity_bps": float(topo.capacities[l]),
                       "emulated_bps": float(topo.capacities[l] * self.controller.state.capacity_scale)}
                      for l, (u, v) in enumerate(zip(topo.link_src.tolist(), topo.link_dst.tolist()))],
            "k": ps.k,
            "pairs": [self.controller.state.pair_label(p) for p in range(ps.num_pairs)],
            "paths": [[ps.node_path(p, k) for k in range(len(c))] for p, c in enumerate(ps.paths)],
        }

    def get_routing(self, query, body):
        return 200, self.controller.state.routing_report()

    def put_routing(self, query, body):
        state = self.controller.state
        routing, result = self.controller.set_routing(body)  # raises RequestError: nothing changed
        return 200, {"version": state.version, **result,
                     "unroutable_pairs": [state.pair_label(p) for p in routing.unroutable]}

    def stats(self, query, body):
        state = self.controller.state
        return 200, {"poll_interval_s": self.controller.settings.poll_interval_s,
                     "links": [state.link_label(l) for l in range(len(state.link_up))],
                     "link_up": state.link_up.tolist(),
                     "utilization": _array(state.link_utilization()),
                     "pairs": [state.pair_label(p) for p in range(state.pathset.num_pairs)],
                     "pair_rate_bps": _array(state.pair_rates())}

    def counters(self, query, body):
        complete = True
        if query.get("fresh", "0").lower() in ("1", "true", "yes"):
            complete = self.controller.poll(wait=True)
        return 200, {"complete": complete, **self.controller.state.counters()}

    def events(self, query, body):
        try:
            since = float(query.get("since", "-inf"))
        except ValueError:
            raise RequestError("'since' must be a number (seconds since the epoch)") from None
        return 200, [event for event in self.controller.state.events if event["time"] > since]

    # ------------------------------------------------------------------ the learned policy
    def _runtime(self):
        runtime = getattr(self.controller, "runtime", None)
        if runtime is None:
            raise RequestError("this controller runs no policy runtime", 404)
        return runtime

    def get_policy(self, query, body):
        return 200, self._runtime().report()

    @staticmethod
    def _refused(change: Callable[[], Any]) -> Any:
        """``change()``, a bundle's refusal (BundleError) becoming a 400 with its reason."""
        from agents.bundle import BundleError

        try:
            return change()
        except BundleError as error:
            raise RequestError(str(error)) from None

    def put_policy(self, query, body):
        runtime = self._runtime()
        request = _validated(PolicyUpload, body, "{'path': '/absolute/path/to/bundle'}")
        if not request.path.startswith("/"):
            raise RequestError(f"'path' must be an absolute path on the controller's machine, got {request.path!r}")
        version = self._refused(lambda: runtime.deploy(request.path))
        return 200, {**runtime.report(), "deployed_version": version}

    def policy_mode(self, query, body):
        runtime = self._runtime()
        request = _validated(ModeRequest, body, "{'mode': 'shadow' or 'active'}")
        self._refused(lambda: runtime.set_mode(request.mode))
        return 200, runtime.report()

    def policy_rollback(self, query, body):
        runtime = self._runtime()
        request = _validated(RollbackRequest, body, "{} or {'version': '<12 hex digits>'}")
        self._refused(lambda: runtime.rollback(request.version))
        return 200, runtime.report()

    def decisions(self, query, body):
        try:
            since = float(query.get("since", "-inf"))
        except ValueError:
            raise RequestError("'since' must be a number (seconds since the epoch)") from None
        return 200, self._runtime().since(since)


class _RequestHandler(WSGIRequestHandler):
    timeout = SOCKET_TIMEOUT_S  # set on each connection: a stalled or idle client is dropped

    def log_message(self, format: str, *args: Any) -> None:  # not stderr per request
        LOG.debug("%s %s", self.address_string(), format % args)


class ApiServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, at most MAX_CONNECTIONS at once (more are closed at once)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            LOG.warning("API: %d connections already open; closing one from %s", MAX_CONNECTIONS, client_address[0])
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def make_api_server(controller: "TEController", host: str, port: int) -> ApiServer:
    return make_server(host, port, Api(controller, controller.settings.token), server_class=ApiServer,
                       handler_class=_RequestHandler)


def serve(controller: "TEController", host: str, port: int) -> None:
    """Run the API forever in the calling thread."""
    server = make_api_server(controller, host, port)
    LOG.info("API on http://%s:%d (see /openapi.json)", host, port)
    server.serve_forever()
