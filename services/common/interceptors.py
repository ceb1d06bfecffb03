"""Server interceptors: request id + access log, metrics, error mapping, API-key auth.

Each one wraps the rpc's behaviour in an async context manager (`around`), for every kind of rpc
(unary or streaming on either side), so that per-request state lives in contextvars for exactly
the lifetime of the call. Order in the server: log, metrics, errors, auth (outermost first).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import grpc
from grpc import aio
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

Around = Callable[[str, aio.ServicerContext[Any, Any]], AbstractAsyncContextManager[None]]
if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]  # generic only in the type stubs
else:
    Handler = grpc.RpcMethodHandler


def split_method(full: str) -> tuple[str, str]:
    service, _, method = full.lstrip("/").rpartition("/")
    return service, method


def _wrap(handler: Handler, method: str, around: Around) -> Handler:
    """A handler equal to `handler` but with its behaviour run inside `around(method, context)`."""
    kwargs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.unary_unary or handler.stream_unary:
        inner_u = cast(Callable[[Any, Any], Awaitable[Any]], handler.unary_unary or handler.stream_unary)

        async def unary_response(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            async with around(method, context):
                return await inner_u(request, context)

        make = grpc.unary_unary_rpc_method_handler if handler.unary_unary else grpc.stream_unary_rpc_method_handler
        return make(unary_response, **kwargs)

    inner_s = cast(Callable[[Any, Any], AsyncIterator[Any]], handler.unary_stream or handler.stream_stream)

    async def stream_response(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        async with around(method, context):
            async for response in inner_s(request, context):
                yield response

    make_s = grpc.unary_stream_rpc_method_handler if handler.unary_stream else grpc.stream_stream_rpc_method_handler
    return make_s(stream_response, **kwargs)


class _AroundInterceptor(aio.ServerInterceptor):
    def around(self, method: str, context: aio.ServicerContext[Any, Any]) -> AbstractAsyncContextManager[None]:
        raise NotImplementedError

    def applies_to(self, method: str) -> bool:
        return True

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not self.applies_to(method):
            return handler
        return _wrap(handler, method, self.around)


def _final_code(context: aio.ServicerContext[Any, Any], error: BaseException | None) -> grpc.StatusCode:
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if error is not None and not isinstance(error, aio.AbortError):
        return grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.OK


class RequestLogInterceptor(_AroundInterceptor):
    """Gives each rpc a request id (the client's `x-request-id` or a new one) and logs one line."""

    @asynccontextmanager
    async def around(self, method: str, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
        rid = _metadata(context).get("x-request-id") or uuid.uuid4().hex[:16]
        token = request_id_var.set(rid[:64])
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            code = _final_code(context, error)
            level = logging.WARNING if code is grpc.StatusCode.INTERNAL else logging.INFO
            if log.isEnabledFor(level):
                log.log(level, "rpc", extra={"method": method, "code": code.name,
                                             "duration_ms": round((time.perf_counter() - start) * 1000, 3),
                                             "peer": context.peer()})
            request_id_var.reset(token)


class MetricsInterceptor(_AroundInterceptor):
    """Prometheus counters and latency histograms per rpc and status code."""

    @asynccontextmanager
    async def around(self, method: str, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
        service, name = split_method(method)
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            RPC_SECONDS.labels(service, name).observe(time.perf_counter() - start)
            RPC_HANDLED.labels(service, name, _final_code(context, error).name).inc()


class ErrorMappingInterceptor(_AroundInterceptor):
    """Domain errors → their status with google.rpc details; anything else → INTERNAL, logged."""

    @asynccontextmanager
    async def around(self, method: str, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
        try:
            yield
        except DomainError as exc:
            await abort_with(context, exc)
        except (aio.AbortError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("unhandled error", extra={"method": method})
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id_var.get()})")


async def abort_with(context: aio.ServicerContext[Any, Any], exc: DomainError) -> None:
    status = to_status_proto(exc)
    await context.abort(
        grpc_code(exc),
        status.message,  # bounded, as the details are
        trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),
                           ("x-request-id", request_id_var.get())),
    )


class AuthInterceptor(_AroundInterceptor):
    """Bearer API key → principal; the method's role policy is checked before the handler runs.

    `policy` maps full method names to the roles allowed; a method without an entry is refused,
    so a new rpc is closed until someone decides who may call it.
    """

    def __init__(self, verifier: KeyVerifier, policy: Mapping[str, frozenset[Role]]) -> None:
        self._verifier = verifier
        self._policy = dict(policy)

    def applies_to(self, method: str) -> bool:
        return not method.lstrip("/").startswith(PUBLIC_SERVICES)

    @asynccontextmanager
    async def around(self, method: str, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[None]:
        principal = await self.authenticate(_metadata(context).get("authorization"))
        allowed = self._policy.get(method)
        if allowed is None or principal.role not in allowed:
            raise PermissionDenied(f"role {principal.role.value} may not call {split_method(method)[1]}")
        token = set_principal(principal)
        try:
            yield
        finally:
            reset_principal(token)

    async def authenticate(self, header: str | None) -> Principal:
        if not header:
            raise Unauthenticated("missing `authorization: Bearer <api key>` metadata")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated("authorization metadata must be `Bearer <api key>`")
        return await self._verifier.verify(key.strip())


def _metadata(context: aio.ServicerContext[Any, Any]) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
