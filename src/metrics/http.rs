//! The HTTP endpoint on `metrics_listen`: `GET /metrics` (the metrics, in
//! the format the client asks for) and `GET /healthz` (liveness and
//! connection-slot saturation), with a bound on its own connections so
//! monitoring can never starve the milter socket of file descriptors.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method as HttpMethod, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::{Format, Metrics, MetricsError};

/// Binds the endpoint's listener on `addr` (the `metrics_listen` setting).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Endpoint connections open at once; more are closed as soon as they are
/// accepted. Without a bound, idle connections (each held up to
/// the 10 s header timeout) used up the process's file descriptors, and the
/// milter socket could accept no MTA connection: mail before monitoring.
pub const MAX_HTTP_CONNECTIONS: usize = 64;

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown`
/// completes; then stops accepting (requests in progress finish on their
/// own tasks). At most [`MAX_HTTP_CONNECTIONS`] are served at once.
///
/// `GET /metrics` answers the metrics (see [`Format::negotiate`]);
/// `GET /healthz` answers `200 ok` while `health()` is true and
/// `503 unhealthy` otherwise; once a listener set a connection limit the
/// body adds `open/limit` connections, and it answers `503 saturated` while
/// every slot is held by a negotiated connection (new MTA connections are
/// then closed at once and mail gets `milter_default_action`). `HEAD`
/// works on both; other methods get 405, other paths 404.
pub async fn serve<H, S>(listener: TcpListener, metrics: Metrics, health: H, shutdown: S)
where
    H: Fn() -> bool + Send + Sync + 'static,
    S: Future<Output = ()>,
{
    let health = Arc::new(health);
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_HTTP_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, retry.
                    tracing::warn!("/metrics endpoint: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let metrics = metrics.clone();
        let health = Arc::clone(&health);
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let response = respond(&req, &metrics, &*health);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("/metrics endpoint: connection: {e}");
            }
        });
    }
}

fn respond(
    req: &Request<Incoming>,
    metrics: &Metrics,
    health: &(dyn Fn() -> bool + Send + Sync),
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path != "/metrics" && path != "/healthz" {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != HttpMethod::GET && req.method() != HttpMethod::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if path == "/healthz" {
        if !health() {
            return plain(StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n");
        }
        return match metrics.saturation() {
            None => plain(StatusCode::OK, "ok\n"),
            Some(s) => {
                let counts = format!(
                    "{}/{} milter connections, {} not negotiated\n",
                    s.open, s.limit, s.unnegotiated
                );
                if s.is_saturated() {
                    plain_owned(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("saturated: {counts}"),
                    )
                } else {
                    plain_owned(StatusCode::OK, format!("ok: {counts}"))
                }
            }
        };
    }
    let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let mut body = String::new();
    if let Err(e) = metrics.encode(format, &mut body) {
        tracing::error!("/metrics: {e}");
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed\n",
        );
    }
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    r
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    plain_bytes(status, Bytes::from_static(body.as_bytes()))
}

fn plain_owned(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    plain_bytes(status, Bytes::from(body))
}

fn plain_bytes(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
