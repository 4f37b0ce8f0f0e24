"""The HTTP side of `mode=serve`: KServe's REST server with TensorFlow Serving's routes in front.

KServe's model server (FastAPI on uvicorn) provides the process model (`serve.workers` spawned
processes sharing one listening socket), graceful shutdown on SIGTERM, liveness (`/`,
`/v2/health/live`), its v1/v2 protocol routes and `/metrics`. scaleflow adds, before KServe's own
routes so they win where paths overlap:

    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]             model_version_status
    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata    signature_def
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict     instances / inputs
    GET  /v2/health/ready                                          503 until every worker is warm
    GET  /metrics                                                  all workers' samples

Errors are TF Serving's: `{"error": "..."}` with 400 (bad body), 404 (unknown model, version or
label), 413 (body over serve.max_body_bytes), 503 (still loading).

Every HTTP request goes through one ASGI middleware, `RequestHooks`: the body-size limit, then
each hook of `request_hooks(settings)` in order (a hook may answer instead of the app, e.g. 401 from
an auth hook), then the route; its status code and latency are recorded under the model identity
the route resolved. Bearer-token auth and the audit log plug in as hooks there.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import tempfile
import time
from typing import Awaitable, Callable, Optional

import orjson
from fastapi import APIRouter, Request, Response
from kserve.protocol.rest.server import RESTServer

from scaleflow.serving import metrics
from scaleflow.serving.model import ScaleflowModel, start_in_background, workers_ready
from scaleflow.serving.repository import NotFound, NotReady
from scaleflow.serving.tfserving import BadRequest, parse_json

log = logging.getLogger("scaleflow.serve")

Hook = Callable[[Request], Awaitable[Optional[Response]]]


class ServingError(Exception):
    """An answer in TF Serving's error shape: `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class BodyTooLarge(ServingError):
    def __init__(self, limit: int):
        super().__init__(413, f"Request body is larger than serve.max_body_bytes={limit} bytes")


def error_response(status: int, message: str) -> Response:
    return Response(orjson.dumps({"error": message}), status_code=status, media_type="application/json")


def json_response(body: dict) -> Response:
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


# ------------------------------------------------------------------------------ request hooks
def request_hooks(settings) -> list[Hook]:
    """The hooks every request passes before its route, in order. Auth and audit are added here."""
    hooks: list[Hook] = []
    if settings.auth_token_file:
        hooks.append(auth_hook(settings.auth_token_file))
    return hooks


def required_role(method: str, path: str) -> Optional[str]:
    """What a request needs: health and /metrics are open (probes, scrapers); model routes need
    `predict`; model repository changes (KServe's load/unload) need `admin`."""
    if path.startswith("/v2/repository") or path.endswith((":load", ":unload", "/load", "/unload")):
        return "admin"
    if path.startswith(("/v1/models", "/v2/models")):
        return "predict"
    return None


def auth_hook(token_file: str) -> Hook:
    """401 without a known bearer token, 403 without the role; each refusal audited without the
    token or the payload (security/auth.py)."""
    from scaleflow.security import auth

    tokens = auth.TokenFile(token_file)

    async def check(request: Request) -> Optional[Response]:
        role = required_role(request.method, request.url.path)
        if role is None:
            return None
        try:
            auth.check(request.headers.get("authorization"), role, tokens=tokens,
                       client=request.client.host if request.client else None)
        except (auth.Unauthorized, auth.Forbidden) as e:
            response = error_response(e.status, str(e))
            if e.status == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return None

    return check


class RequestHooks:
    """ASGI middleware: body limit, hooks, then the app; records status and latency per model."""

    def __init__(self, app, settings, hooks: list[Hook]):
        self.app, self.settings, self.hooks = app, settings, hooks

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        counted = path.startswith(("/v1/models/", "/v2/models/"))
        info: dict = {}
        token = metrics.REQUEST_INFO.set(info)
        status = [500]
        started = time.perf_counter()

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            limit = self.settings.max_body_bytes
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                return await self._answer(scope, receive, send_status, BodyTooLarge(limit))
            received = [0]

            async def limited_receive():
                message = await receive()
                if message["type"] == "http.request":
                    received[0] += len(message.get("body", b""))
                    if received[0] > limit:
                        raise BodyTooLarge(limit)  # a chunked body with no Content-Length
                return message

            if self.hooks:
                request = Request(scope, limited_receive)
                for hook in self.hooks:
                    answer = await hook(request)
                    if answer is not None:
                        return await answer(scope, limited_receive, send_status)
            await self.app(scope, limited_receive, send_status)
        finally:
            metrics.REQUEST_INFO.reset(token)
            if counted:
                labels = info.get("labels") or metrics.unknown_labels(info.get("name", ""))
                metrics.record_request(labels, status[0], time.perf_counter() - started if "labels" in info else None)

    async def _answer(self, scope, receive, send, error: ServingError):
        log.warning("%s %s -> %d: %s", scope.get("method"), scope.get("path"), error.status, error.message)
        await error_response(error.status, error.message)(scope, receive, send)


# ------------------------------------------------------------------------------------ routes
def tfserving_router(model: ScaleflowModel) -> APIRouter:
    router = APIRouter()

    def check_name(name: str) -> None:
        metrics.note(name=name)
        if name != model.name:
            raise ServingError(404, f"Servable not found for request: Latest({name})")

    def parse_version(version: str | None) -> int | None:
        if version is None:
            return None
        if not version.isdigit():
            raise ServingError(400, f"version must be a positive integer, got {version[:32]!r}")
        return int(version)

    def status(name: str, version: str | None = None, label: str | None = None) -> Response:
        check_name(name)
        if model.repository is None or not model.repository.polls:
            raise ServingError(503, f"model {name} is still loading and warming up")
        if label is not None:
            servable = _servable(model, None, label)
            return json_response({"model_version_status": model.repository.status(servable.version)})
        rows = model.repository.status(parse_version(version))
        if not rows:
            raise ServingError(404, f"Servable not found for request: "
                                    + (f"Specific({name}, {version})" if version else f"Latest({name})"))
        return json_response({"model_version_status": rows})

    def metadata(name: str, version: str | None = None, label: str | None = None) -> Response:
        check_name(name)
        servable = _servable(model, parse_version(version), label)
        return json_response({"model_spec": {"name": name, "signature_name": "", "version": str(servable.version)},
                              "metadata": {"signature_def": {"signature_def": {
                                                "serving_default": servable.signature_def()}},
                                           "scaleflow": {"identity": servable.identity,
                                                         "task": servable.metadata.get("task"),
                                                         "class_names": servable.metadata.get("class_names"),
                                                         "feature_names": servable.metadata.get("feature_names")}}})

    async def predict(request: Request, name: str, version: str | None = None, label: str | None = None) -> Response:
        check_name(name)
        servable = _servable(model, parse_version(version), label)
        metrics.note(labels=metrics.identity_labels(servable))
        payload = parse_json(await request.body())
        body, _ = await model.infer(payload, servable.version)
        return json_response(body)

    router.add_api_route("/v1/models/{name}:predict", predict, methods=["POST"])
    router.add_api_route("/v1/models/{name}/versions/{version}:predict", predict, methods=["POST"])
    router.add_api_route("/v1/models/{name}/labels/{label}:predict", predict, methods=["POST"])
    router.add_api_route("/v1/models/{name}/metadata", metadata, methods=["GET"])
    router.add_api_route("/v1/models/{name}/versions/{version}/metadata", metadata, methods=["GET"])
    router.add_api_route("/v1/models/{name}/labels/{label}/metadata", metadata, methods=["GET"])
    router.add_api_route("/v1/models/{name}", status, methods=["GET"])
    router.add_api_route("/v1/models/{name}/versions/{version}", status, methods=["GET"])
    router.add_api_route("/v1/models/{name}/labels/{label}", status, methods=["GET"])
    return router


def _servable(model: ScaleflowModel, version: int | None, label: str | None):
    try:
        return model.servable(version, label)
    except NotFound as e:
        raise ServingError(404, str(e)) from None
    except NotReady as e:
        raise ServingError(503, str(e)) from None


def health_router(model: ScaleflowModel, settings) -> APIRouter:
    router = APIRouter()

    async def ready() -> Response:
        if model.ready and workers_ready(settings.state_dir, settings.workers):
            return json_response({"ready": True})
        return error_response(503, "not ready: loading and warming up the model")

    async def metrics_text() -> Response:
        content, content_type = metrics.render()
        return Response(content, media_type=content_type)

    router.add_api_route("/v2/health/ready", ready, methods=["GET"])
    router.add_api_route("/metrics", metrics_text, methods=["GET"])
    return router


async def _serving_error(request: Request, exc: ServingError) -> Response:
    # Method, path and the reason: never the body (request values may be personal data).
    log.warning("%s %s -> %d: %s", request.method, request.url.path, exc.status, exc.message)
    return error_response(exc.status, exc.message)


async def _bad_request(request: Request, exc: Exception) -> Response:
    return await _serving_error(request, ServingError(400, str(exc)))


async def _not_found(request: Request, exc: Exception) -> Response:
    return await _serving_error(request, ServingError(404, str(exc)))


async def _not_ready(request: Request, exc: Exception) -> Response:
    return await _serving_error(request, ServingError(503, str(exc)))


# ------------------------------------------------------------------------------------ server
class ScaleflowRESTServer(RESTServer):
    """KServe's REST server, TF Serving's routes first; binds `serve.host`, not KServe's 0.0.0.0.

    Pickled into every worker process (KServe's spawn); `run` is each worker's entry point.
    """

    def __init__(self, model: ScaleflowModel, settings, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.config.host = settings.host
        self.model, self.settings = model, settings

    def create_application(self):
        from kserve import errors as kserve_errors
        from kserve.model_server import app

        _configure_logging()
        logging.getLogger("uvicorn.access").setLevel(logging.WARNING)  # a line per request: costly under load
        app.include_router(tfserving_router(self.model))
        app.include_router(health_router(self.model, self.settings))
        super().create_application()  # KServe's middlewares, routes and error handlers
        app.add_exception_handler(ServingError, _serving_error)
        app.add_exception_handler(BadRequest, _bad_request)
        app.add_exception_handler(NotFound, _not_found)
        app.add_exception_handler(NotReady, _not_ready)
        app.add_exception_handler(kserve_errors.InvalidInput, _bad_request)
        app.add_exception_handler(kserve_errors.ModelNotFound, _not_found)
        app.add_middleware(RequestHooks, settings=self.settings, hooks=request_hooks(self.settings))
        start_in_background(self.model, self.settings.state_dir)
        return app

    def _add_middlewares(self, app):
        """Not KServe's: its timing middleware logs two lines per request (cost under load);
        RequestHooks records latency as Prometheus histograms instead."""

    def run(self, sockets=None):
        super().run(sockets=sockets)
        self.model.stop()


def _worker_processes_class():
    from kserve.protocol.rest.multiprocess.server import RESTServerMultiProcess

    class WorkerProcesses(RESTServerMultiProcess):
        """KServe's process manager, with one change: a worker counts as alive while its process
        exists. KServe pings each worker every 0.5 s and kills it after 5 s without an answer, but a
        spawned worker answers only once its imports are done (kserve, then TensorFlow in a thread):
        on a busy 2-core machine that takes longer, and workers were killed in a loop."""

        async def keep_subprocess_alive(self, sockets) -> None:
            from kserve.protocol.rest.multiprocess.server import RESTServerProcess

            if self.should_exit.is_set():
                return
            for index, process in enumerate(self._processes):
                if process._process.is_alive():
                    continue
                log.warning("worker process %s exited (status %s); starting another", process.pid,
                            process._process.exitcode)
                process = RESTServerProcess(sockets, self._rest_server.run)
                process.start()
                self._processes[index] = process

    return WorkerProcesses


def _WorkerProcesses(*args, **kwargs):  # noqa: N802 - a class made on demand (kserve imports stay lazy)
    return _worker_processes_class()(*args, **kwargs)


def _configure_logging() -> None:
    logger = logging.getLogger("scaleflow")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def serve(settings) -> None:
    """Run the server until SIGTERM/SIGINT; in-flight requests finish first (up to serve.grace_s)."""
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension

    if settings.workers > 1 and not settings.state_dir:
        settings.state_dir = tempfile.mkdtemp(prefix="scaleflow-serve-")
    model = ScaleflowModel(settings)
    registry = ModelRepository()
    registry.update(model)
    dataplane = DataPlane(model_registry=registry)
    rest = ScaleflowRESTServer(model, settings, "kserve.model_server:app", dataplane,
                               ModelRepositoryExtension(model_registry=registry), settings.port,
                               workers=settings.workers, grace_period=int(settings.grace_s))
    log.info("serving model %s from %s on http://%s:%d (%d worker%s, batching %s)", settings.name,
             settings.model_dir, settings.host, settings.port, settings.workers, "s" if settings.workers > 1 else "",
             f"up to {settings.max_batch_size} rows / {settings.batch_timeout_s * 1000:g} ms"
             if settings.batching else "off")
    if settings.workers == 1:
        stopped: list = []
        # uvicorn stops gracefully on SIGTERM, then re-raises it to the handler it found: this one
        # turns it into a normal return (exit 0) instead of death by signal.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda s, f: stopped.append(s))
        rest.run()
        log.info("server stopped")
        return
    # Set before the workers start (they inherit the environment and import prometheus-client then).
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="scaleflow-metrics-"))

    multi = _WorkerProcesses("kserve.model_server:app", dataplane, ModelRepositoryExtension(model_registry=registry),
                                   settings.port, workers=settings.workers, grace_period=int(settings.grace_s))
    multi._rest_server = rest  # KServe's process manager, scaleflow's server in each process

    async def main():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(multi.stop()))
        await multi.start()

    asyncio.run(main())
    log.info("server stopped")
