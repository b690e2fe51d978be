"""A small client for the controller's HTTP API (standard library only)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any


class ControllerError(RuntimeError):
    """The controller refused a request or did not answer; ``status`` is the HTTP code (0: no answer),
    ``payload`` the JSON body it answered with (None when there was none)."""

    def __init__(self, message: str, status: int = 0, payload: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.payload = payload


class ControllerClient:
    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            try:
                payload = json.loads(error.read())
            except ValueError:
                payload = None
            reason = payload.get("error", error.reason) if isinstance(payload, dict) else error.reason
            raise ControllerError(f"{method} {path}: {error.code} {reason}", error.code, payload) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            raise ControllerError(f"{method} {path}: no answer from {self.base_url} ({error})") from None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def set_ratios(self, ratios) -> dict:
        return self.request("PUT", "/routing", {"ratios": [list(map(float, row)) for row in ratios]})

    def counters(self, fresh: bool = True) -> dict:
        return self.get("/counters?fresh=1" if fresh else "/counters")

    # the learned policy (controllers.runtime)
    def policy(self) -> dict:
        return self.get("/policy")

    def deploy_policy(self, bundle_path: str) -> dict:
        """Deploy the bundle directory ``bundle_path`` (a path on the controller's machine)."""
        return self.request("PUT", "/policy", {"path": bundle_path})

    def set_policy_mode(self, mode: str) -> dict:
        return self.request("POST", "/policy/mode", {"mode": mode})

    def rollback_policy(self, version: str | None = None) -> dict:
        return self.request("POST", "/policy/rollback", {} if version is None else {"version": version})

    def decisions(self, since: float | None = None) -> list:
        return self.get("/decisions" if since is None else f"/decisions?since={since!r}")

    def health(self) -> dict:
        """The health report whether or not every switch is ready (503 still carries it)."""
        try:
            return self.get("/health")
        except ControllerError as error:
            if error.status == 503 and isinstance(error.payload, dict):
                return error.payload
            raise

    def wait_ready(self, timeout_s: float = 60.0, interval_s: float = 0.2) -> dict:
        """Until every switch of the topology is connected and programmed."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.get("/health")
                return last
            except ControllerError as error:
                last = error
            time.sleep(interval_s)
        raise ControllerError(f"controller at {self.base_url} not ready after {timeout_s:.0f} s: {last}")
