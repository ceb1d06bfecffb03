"""The rpc pipeline every service shares: request id + access log, metrics, error mapping, auth.

The four concerns are separate pieces (`_Method` holds the per-method metric children and role
policy, `abort_with` maps errors, `Authenticator` turns keys into principals), but they run in one
wrapper per rpc: a stack of four generic interceptors cost more per call than a short query does.
Per-request state (request id, principal) lives in contextvars for exactly the lifetime of the call.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import grpc
from google.rpc import status_pb2
from grpc import aio
from grpc_status import rpc_status
from prometheus_client import Counter, Histogram

from services.common.apikeys import KeyVerifier
from services.common.error_mapping import grpc_code, to_status_proto
from services.common.errors import DomainError, PermissionDenied, Unauthenticated
from services.common.principal import Principal, Role, request_id_var, reset_principal, set_principal

log = logging.getLogger("v2x.rpc")

# Services every client may reach without a key (infrastructure, not data).
PUBLIC_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                   "grpc.reflection.v1.ServerReflection")

RPC_HANDLED = Counter("v2x_rpc_handled_total", "RPCs completed", ["service", "method", "code"])
RPC_SECONDS = Histogram(
    "v2x_rpc_handling_seconds", "RPC handling time (streams: whole stream)", ["service", "method"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]  # generic only in the type stubs
else:
    Handler = grpc.RpcMethodHandler
Context = aio.ServicerContext[Any, Any]


def split_method(full: str) -> tuple[str, str]:
    service, _, method = full.lstrip("/").rpartition("/")
    return service, method


class Authenticator:
    """Bearer API key → principal, checked against the method's roles before the handler runs.

    `policy` maps full method names to the roles allowed; a method without an entry is refused,
    so a new rpc is closed until someone decides who may call it.
    """

    def __init__(self, verifier: KeyVerifier, policy: Mapping[str, frozenset[Role]]) -> None:
        self._verifier = verifier
        self.policy = dict(policy)

    async def authenticate(self, header: str | None) -> Principal:
        if not header:
            raise Unauthenticated("missing `authorization: Bearer <api key>` metadata")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated("authorization metadata must be `Bearer <api key>`")
        return await self._verifier.verify(key.strip())


@dataclass
class _Method:
    """What the pipeline needs to know about one method, computed once."""

    full: str
    name: str
    public: bool
    allowed: frozenset[Role] | None
    seconds: Any  # the histogram child for this method
    service: str
    handled: dict[grpc.StatusCode, Any] = field(default_factory=dict)

    def count(self, code: grpc.StatusCode) -> None:
        child = self.handled.get(code)
        if child is None:
            child = self.handled[code] = RPC_HANDLED.labels(self.service, self.name, code.name)
        child.inc()


class StreamGone(Exception):
    """A server stream could not write its next message: its client went away (or the server is stopping)."""


class _Call:
    """One rpc in flight: entered before the handler, exited after it (or its last message).

    Everything read from the servicer context is read on entry, while the rpc is alive, and the context is touched
    on exit only to send a status: once grpc has finished an rpc it releases the core call, and a context method
    that reaches it (`peer()`, a write, an abort) then dereferences freed memory, which kills the process.
    """

    __slots__ = ("_auth", "_context", "_metadata", "_method", "_peer", "_principal_token", "_rid_token", "_start")

    def __init__(self, method: _Method, context: Context, auth: Authenticator) -> None:
        self._method = method
        self._context = context
        self._auth = auth
        self._principal_token: Any = None
        self._metadata: dict[str, str] = {}
        self._peer = ""

    async def __aenter__(self) -> None:
        metadata = _metadata(self._context)
        rid = metadata.get("x-request-id") or uuid.uuid4().hex[:16]
        self._rid_token = request_id_var.set(rid[:64])
        self._start = time.perf_counter()
        self._metadata = metadata
        self._peer = self._context.peer()

    async def authorize(self) -> None:
        if self._method.public:
            return
        principal = await self._auth.authenticate(self._metadata.get("authorization"))
        if self._method.allowed is None or principal.role not in self._method.allowed:
            raise PermissionDenied(f"role {principal.role.value} may not call {self._method.name}")
        self._principal_token = set_principal(principal)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._principal_token is not None:
            reset_principal(self._principal_token)
        code = self._code(exc)
        elapsed = time.perf_counter() - self._start
        self._method.seconds.observe(elapsed)
        self._method.count(code)
        level = logging.WARNING if code is grpc.StatusCode.INTERNAL else logging.INFO
        if log.isEnabledFor(level):
            unhandled = exc if code is grpc.StatusCode.INTERNAL and exc is not None else None
            log.log(level, "rpc", exc_info=(type(unhandled), unhandled, unhandled.__traceback__) if unhandled else None,
                    extra={"method": self._method.full, "code": code.name, "duration_ms": round(elapsed * 1000, 3),
                           "peer": self._peer})
        try:
            # A cancelled rpc (the client went away, or the server is stopping) has nobody to send a status to.
            if code is grpc.StatusCode.CANCELLED or self._context.done():
                return
            if isinstance(exc, DomainError):
                await abort_with(self._context, exc)
            elif exc is not None and code is grpc.StatusCode.INTERNAL:
                await self._context.abort(grpc.StatusCode.INTERNAL,
                                          f"internal error (request id {request_id_var.get()})")
        finally:
            request_id_var.reset(self._rid_token)

    def _code(self, exc: BaseException | None) -> grpc.StatusCode:
        if exc is None or isinstance(exc, aio.AbortError):
            code = self._context.code()
            return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.OK
        if isinstance(exc, DomainError):
            return grpc_code(exc)
        if isinstance(exc, asyncio.CancelledError | GeneratorExit | StreamGone):
            return grpc.StatusCode.CANCELLED
        return grpc.StatusCode.INTERNAL


class RpcInterceptor(aio.ServerInterceptor):
    """Request id + JSON access log, Prometheus metrics, error mapping and auth for every rpc."""

    def __init__(self, verifier: KeyVerifier, policy: Mapping[str, frozenset[Role]]) -> None:
        self._auth = Authenticator(verifier, policy)
        # Handlers are looked up per call but do not change: wrap each once.
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def _describe(self, full: str) -> _Method:
        service, name = split_method(full)
        public = full.lstrip("/").startswith(PUBLIC_SERVICES)
        return _Method(full, name, public, self._auth.policy.get(full), RPC_SECONDS.labels(service, name), service)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        full = handler_call_details.method
        cached = self._wrapped.get(full)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _wrap(handler, self._describe(full), self._auth)
        self._wrapped[full] = (handler, wrapped)
        return wrapped


def _wrap(handler: Handler, method: _Method, auth: Authenticator) -> Handler:
    kwargs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.unary_unary or handler.stream_unary:
        inner_u = cast(Callable[[Any, Any], Awaitable[Any]], handler.unary_unary or handler.stream_unary)

        async def unary_response(request: Any, context: Context) -> Any:
            call = _Call(method, context, auth)
            async with call:
                await call.authorize()
                return await inner_u(request, context)

        make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
        return make(unary_response, **kwargs)

    inner_s = cast(Callable[[Any, Any], Any], handler.unary_stream or handler.stream_stream)

    # A coroutine handler (grpc's reader/writer form: it writes through the context itself), never an async
    # generator: grpc leaves a generator that was suspended at a write when the client cancelled to be finalised
    # later by the garbage collector, after the rpc's core call is gone, and the code after its `yield` would then
    # reach a dead context. Here the handler's own generator is closed before the rpc ends, whatever ends it.
    async def stream_response(request: Any, context: Context) -> None:
        call = _Call(method, context, auth)
        try:
            async with call:
                await call.authorize()
                responses = inner_s(request, context)
                if not inspect.isasyncgen(responses):  # a reader/writer handler (e.g. health Watch)
                    await responses
                    return
                try:
                    async for response in responses:
                        try:
                            await context.write(response)
                        except Exception as exc:  # the core refuses the write: the client or the server went away
                            raise StreamGone(method.full) from exc
                finally:
                    await responses.aclose()
        except StreamGone:
            # Logged and counted as CANCELLED on the way out; grpc takes a cancellation as the end of an rpc whose
            # peer is gone (any other exception would have it try to send a status on the dead call).
            raise asyncio.CancelledError from None

    make_s = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
    return make_s(stream_response, **kwargs)


async def abort_with(context: Context, exc: DomainError) -> None:
    await abort_with_status(context, to_status_proto(exc))


async def abort_with_status(context: Context, status: status_pb2.Status) -> None:
    """Ends the rpc with `status` (a google.rpc.Status: code, message, typed details) and the request id."""
    wire = rpc_status.to_status(status)
    await context.abort(wire.code, wire.details,  # the message is bounded, as the details are
                        trailing_metadata=(*wire.trailing_metadata, ("x-request-id", request_id_var.get())))


def _metadata(context: Context) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
