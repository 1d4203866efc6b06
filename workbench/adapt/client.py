"""The device's HTTP client for the cloud service: shared-secret token, retries with exponential back-off.

Transport failures (connection refused or reset, a response cut short, a timeout) and 5xx answers are retried
with delays base · 2^attempt (capped at `cap`) until `attempts` are used up, then `CloudUnavailable` is raised
— the device keeps its weights and its queue and tries again later. 4xx answers are never retried: they raise
`CloudRejected` with the service's message (a wrong token, a malformed or oversized request).

    >>> RetryPolicy(attempts=4, base=0.1, cap=0.3).delays()
    [0.1, 0.2, 0.3]
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx

from workbench.errors import WorkbenchError


class CloudUnavailable(WorkbenchError):
    """The cloud could not be reached (after the retries)."""


class CloudRejected(WorkbenchError):
    """The cloud answered 4xx; `status` and the service's message are kept."""

    def __init__(self, status: int, message: str):
        self.status, self.message = status, message
        super().__init__(f"cloud refused the request ({status}): {message}")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    base: float = 0.25
    cap: float = 4.0

    def delays(self) -> list[float]:
        """The sleep before each retry (attempts − 1 of them)."""
        return [min(self.cap, self.base * 2 ** i) for i in range(self.attempts - 1)]


@dataclass
class CloudClient:
    """Talks to `workbench cloud serve` at `url` (e.g. http://127.0.0.1:8765)."""

    url: str
    token: str
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float = 600.0
    retries_used: int = 0  # total retries so far (for the run's report)
    sleep: object = time.sleep

    def _request(self, method: str, path: str, **kw) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        delays = self.retry.delays() + [None]
        last = ""
        for delay in delays:
            try:
                with httpx.Client(timeout=self.timeout) as http:
                    r = http.request(method, self.url.rstrip("/") + path, headers=headers, **kw)
                    r.read()
                if r.status_code < 400:
                    return r
                if r.status_code < 500:
                    raise CloudRejected(r.status_code, _message(r))
                last = f"{r.status_code}: {_message(r)}"
            except httpx.HTTPError as e:  # transport errors, incomplete bodies, timeouts
                last = f"{type(e).__name__}: {e}"
            if delay is None:
                break
            self.retries_used += 1
            self.sleep(delay)
        raise CloudUnavailable(f"{method} {path}: the cloud at {self.url} did not answer after "
                               f"{self.retry.attempts} attempts (last: {last})")

    def health(self) -> dict:
        return self._request("GET", "/v1/health").json()

    def register(self, device_id: str, body: dict) -> dict:
        return self._request("POST", f"/v1/devices/{device_id}/register", json=body).json()

    def upload(self, device_id: str, payload: bytes) -> dict:
        return self._request("POST", f"/v1/devices/{device_id}/samples", content=payload,
                             headers={"Content-Type": "application/octet-stream"}).json()

    def round(self, device_id: str, index: int, base_hash: str) -> bytes:
        """The downlink payload of round `index` (the cloud trains on this round's samples if not done yet)."""
        return self._request("POST", f"/v1/devices/{device_id}/rounds/{index}", json={"base_hash": base_hash}).content

    def ack(self, device_id: str, index: int, new_hash: str) -> dict:
        return self._request("POST", f"/v1/devices/{device_id}/rounds/{index}/ack", json={"hash": new_hash}).json()

    def status(self, device_id: str) -> dict:
        return self._request("GET", f"/v1/devices/{device_id}/status").json()


def _message(r: httpx.Response) -> str:
    try:
        return str(r.json().get("error", r.text))
    except ValueError:
        return r.text[:200]
