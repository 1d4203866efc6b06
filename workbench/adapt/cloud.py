"""The cloud service: an HTTP API over `CloudState` (Starlette on uvicorn — the ASGI stack gradio installs).

    workbench cloud serve --port 8765 --state cloud-state/     # binds 127.0.0.1; token from WORKBENCH_CLOUD_TOKEN

| method | path | body → answer |
|---|---|---|
| GET | /v1/health | → {ok, devices} |
| POST | /v1/devices/{id}/register | JSON registration → {round, hash} |
| POST | /v1/devices/{id}/samples | uplink payload (safetensors) → {stored, duplicate} |
| POST | /v1/devices/{id}/rounds/{r} | {base_hash} → the downlink payload (trains first when needed) |
| POST | /v1/devices/{id}/rounds/{r}/ack | {hash} → {committed} |
| GET | /v1/devices/{id}/status | → {round, hash, samples, training, last_train} |

Every request needs `Authorization: Bearer <token>` (compared in constant time; 401 otherwise). Bodies larger
than `max_request_bytes` get 413 before they are read in full; malformed bodies 400, unknown devices 404, state
conflicts 409, all as {"error": message}; the service keeps serving. Training runs in a worker thread, so
health and status stay responsive during a round.

    >>> app = create_app(None, "secret")   # doctest: +SKIP
"""
from __future__ import annotations

import hmac
import json
import os
import secrets
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from workbench.adapt.cloud_state import CloudState, Conflict, UnknownDevice
from workbench.errors import InputError

MAX_REQUEST_BYTES = 8 * 1024 * 1024
MAX_JSON_BYTES = 64 * 1024
TOKEN_ENV = "WORKBENCH_CLOUD_TOKEN"


class _TooLarge(Exception):
    pass


async def _read(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _TooLarge(f"the request body ({declared} bytes) exceeds the limit of {limit} bytes")
    body, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge(f"the request body exceeds the limit of {limit} bytes")
        body.append(chunk)
    return b"".join(body)


async def _json(request: Request) -> dict:
    raw = await _read(request, MAX_JSON_BYTES)
    try:
        value = json.loads(raw or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError("request", f"the body is not JSON ({e})") from e
    if not isinstance(value, dict):
        raise InputError("request", "the body must be a JSON object")
    return value


def create_app(state: CloudState, token: str, max_request_bytes: int = MAX_REQUEST_BYTES) -> Starlette:
    """The ASGI app serving `state`, guarded by `token`."""
    if not token:
        raise ValueError("the cloud needs a non-empty shared-secret token")
    expected = f"Bearer {token}".encode()

    def guarded(handler):
        async def endpoint(request: Request) -> Response:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return JSONResponse({"error": "missing or wrong token"}, 401)
            try:
                return await handler(request)
            except _TooLarge as e:
                return JSONResponse({"error": str(e)}, 413)
            except UnknownDevice as e:
                return JSONResponse({"error": str(e)}, 404)
            except Conflict as e:
                return JSONResponse({"error": str(e)}, 409)
            except InputError as e:
                return JSONResponse({"error": str(e)}, 400)
        return endpoint

    def device_id(request: Request) -> str:
        did = request.path_params["device"]
        if not CloudState.valid_id(did):
            raise InputError("device id", "must be 1–64 letters, digits, '_' or '-'")
        return did

    def round_index(request: Request) -> int:
        raw = request.path_params["round"]
        if not raw.isdigit() or int(raw) > 100_000:
            raise InputError("round", f"must be a non-negative integer, not {raw!r}")
        return int(raw)

    async def health(request):
        return JSONResponse({"ok": True, "devices": len(state.devices)})

    async def register(request):
        did, body = device_id(request), await _json(request)
        rec = await run_in_threadpool(state.register, did, body)
        return JSONResponse({"round": rec.round, "hash": rec.hash})

    async def samples(request):
        did = device_id(request)
        data = await _read(request, max_request_bytes)
        return JSONResponse(await run_in_threadpool(state.add_sample, did, data, max_request_bytes))

    async def rounds(request):
        did, idx, body = device_id(request), round_index(request), await _json(request)
        data = await run_in_threadpool(state.downlink, did, idx, str(body.get("base_hash", "")))
        return Response(data, media_type="application/octet-stream")

    async def ack(request):
        did, idx, body = device_id(request), round_index(request), await _json(request)
        return JSONResponse(await run_in_threadpool(state.ack, did, idx, str(body.get("hash", ""))))

    async def status(request):
        return JSONResponse(state.status(device_id(request)))

    routes = [Route("/v1/health", guarded(health), methods=["GET"]),
              Route("/v1/devices/{device}/register", guarded(register), methods=["POST"]),
              Route("/v1/devices/{device}/samples", guarded(samples), methods=["POST"]),
              Route("/v1/devices/{device}/rounds/{round}", guarded(rounds), methods=["POST"]),
              Route("/v1/devices/{device}/rounds/{round}/ack", guarded(ack), methods=["POST"]),
              Route("/v1/devices/{device}/status", guarded(status), methods=["GET"])]
    return Starlette(routes=routes)


def resolve_token(token_file: str | None, state_dir: Path) -> str:
    """The shared secret: the token file, else $WORKBENCH_CLOUD_TOKEN, else a new one written to
    state_dir/token (mode 0600) for the device to read."""
    if token_file:
        return Path(token_file).read_text().strip()
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    path = state_dir / "token"
    if not path.is_file():
        state_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def serve(state_dir: str | os.PathLike, pocket: str | os.PathLike, teacher: str | os.PathLike, port: int,
          host: str = "127.0.0.1", token_file: str | None = None, max_request_bytes: int = MAX_REQUEST_BYTES,
          threads: int = 1) -> None:
    """Run the service until interrupted (what `workbench cloud serve` calls)."""
    import torch
    import uvicorn
    torch.set_num_threads(max(1, threads))
    root = Path(state_dir)
    token = resolve_token(token_file, root)
    state = CloudState(root, pocket, teacher)
    print(f"cloud: serving on http://{host}:{port} (state {root}, token {'file ' + token_file if token_file else 'from ' + (TOKEN_ENV if os.environ.get(TOKEN_ENV) else str(root / 'token'))})", flush=True)
    uvicorn.run(create_app(state, token, max_request_bytes), host=host, port=port, log_level="warning",
                access_log=False)
