//! The gateway's HTTPS + JSON API for outside users (docs/gateway-openapi.json
//! documents it): `POST /v1/score`, `GET /v1/models`, `GET /v1/health`.
//! Every call but health is authenticated (API token or client
//! certificate, see [`super::users`]) and rate limited per user; errors are
//! JSON with a stable code and a message saying what to do.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sotto_node::limiter::RateLimiter;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::gateway::{Gateway, GatewayError};
use super::users::{User, Users, UsersError};

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request body accepted.
const MAX_BODY: usize = 4 << 20;

/// What the HTTP handlers share.
pub struct HttpState {
    /// The inference.
    pub gateway: Gateway,
    /// Who may call.
    pub users: Users,
    /// Each user's request rate.
    pub limiters: HashMap<String, Mutex<RateLimiter>>,
}

impl HttpState {
    /// The state for `users`, each limited to its own rate or to `rate`
    /// per second in bursts of `burst`.
    pub fn new(gateway: Gateway, users: Users, rate: u32, burst: u32) -> Self {
        let limiters = users
            .users
            .iter()
            .map(|u| {
                let limiter = RateLimiter::new(u.rate.unwrap_or(rate), u.burst.unwrap_or(burst));
                (u.name.clone(), Mutex::new(limiter))
            })
            .collect();
        Self {
            gateway,
            users,
            limiters,
        }
    }
}

/// The client certificate's node name, when the client presented one.
#[derive(Clone)]
struct ClientCertificate(Option<String>);

/// A JSON error answer.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl ToString) -> Self {
        Self {
            status,
            code,
            message: message.to_string(),
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "error": { "code": self.code, "message": self.message } }));
        let mut response = (self.status, body).into_response();
        if let Some(seconds) = self.retry_after {
            if let Ok(v) = seconds.to_string().parse() {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        let (status, code) = match &e {
            GatewayError::UnknownModel(_) => (StatusCode::NOT_FOUND, "unknown_model"),
            GatewayError::IdCount(_) => (StatusCode::BAD_REQUEST, "bad_id_count"),
            GatewayError::ProviderTimeout { .. } => {
                (StatusCode::GATEWAY_TIMEOUT, "provider_timeout")
            }
            GatewayError::ProviderFailed { .. } | GatewayError::Inference(_) => {
                (StatusCode::BAD_GATEWAY, "provider_failed")
            }
            GatewayError::NoKey(_)
            | GatewayError::ProviderNotMember(_)
            | GatewayError::AuditBacklog => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            GatewayError::ModelRun(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        Self::new(status, code, e)
    }
}

impl From<UsersError> for ApiError {
    fn from(e: UsersError) -> Self {
        let code = match e {
            UsersError::NoCredentials => "no_credentials",
            _ => "bad_credentials",
        };
        Self::new(StatusCode::UNAUTHORIZED, code, e)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreBody {
    model: String,
    #[serde(default)]
    version: Option<u64>,
    ids: Vec<String>,
}

#[derive(Serialize)]
struct ScoreItem {
    id: String,
    found: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    score: Option<f64>,
}

impl HttpState {
    /// The user the request's credentials admit, within its rate.
    fn admit(
        &self,
        headers: &HeaderMap,
        certificate: &ClientCertificate,
    ) -> Result<&User, ApiError> {
        let token = match headers.get(header::AUTHORIZATION) {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::UNAUTHORIZED,
                            "bad_credentials",
                            "the Authorization header is not `Bearer TOKEN`",
                        )
                    })?,
            ),
        };
        let user = self.users.authenticate(token, certificate.0.as_deref())?;
        let internal = || {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "rate limiter unavailable",
            )
        };
        let mut limiter = self
            .limiters
            .get(&user.name)
            .ok_or_else(internal)?
            .lock()
            .map_err(|_| internal())?;
        if !limiter.try_take(&user.name, Instant::now()) {
            let (rate, burst) = limiter.limits();
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "over_rate",
                format!("{} is over its rate ({rate} requests per second, bursts of {burst}); retry after a second", user.name),
            );
            e.retry_after = Some(1);
            return Err(e);
        }
        Ok(user)
    }
}

async fn score(
    State(state): State<Arc<HttpState>>,
    Extension(certificate): Extension<ClientCertificate>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let user = state.admit(&headers, &certificate)?;
    let body: ScoreBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "the body is not a score request ({e}); send {{\"model\": NAME, \"ids\": [ID, ...]}}"
            ),
        )
    })?;
    let scored = state
        .gateway
        .score(&user.name, &body.model, body.version, &body.ids)
        .await?;
    let scores: Vec<ScoreItem> = body
        .ids
        .into_iter()
        .zip(scored.scores)
        .map(|(id, score)| ScoreItem {
            id,
            found: score.is_some(),
            score,
        })
        .collect();
    Ok(Json(json!({
        "request": scored.request,
        "model": scored.model,
        "version": scored.version,
        "scores": scores,
    }))
    .into_response())
}

async fn models(
    State(state): State<Arc<HttpState>>,
    Extension(certificate): Extension<ClientCertificate>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.admit(&headers, &certificate)?;
    let mut list: Vec<_> = state
        .gateway
        .models
        .values()
        .flatten()
        .map(|m| {
            json!({
                "name": m.name(), "version": m.version(), "kind": m.kind(),
                "dataset": m.dataset(), "features": m.features(),
                "digest": hex::encode(m.digest()),
            })
        })
        .collect();
    list.sort_by_key(|m| (m["name"].to_string(), m["version"].as_u64()));
    Ok(Json(json!({ "models": list })).into_response())
}

async fn health() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// The API's routes.
fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/v1/score", post(score))
        .route("/v1/models", get(models))
        .route("/v1/health", get(health))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// The paths the API serves (checked against the OpenAPI file in tests).
pub const PATHS: [(&str, &str); 3] = [
    ("/v1/score", "post"),
    ("/v1/models", "get"),
    ("/v1/health", "get"),
];

/// Every error code the API answers with (the OpenAPI file lists the same).
pub const ERROR_CODES: [&str; 10] = [
    "bad_request",
    "bad_id_count",
    "no_credentials",
    "bad_credentials",
    "unknown_model",
    "over_rate",
    "provider_failed",
    "provider_timeout",
    "unavailable",
    "internal",
];

/// Serves the API over HTTPS on `listener` until `shutdown`; each
/// connection's client certificate (if any) is passed to the handlers.
pub async fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    state: Arc<HttpState>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let router = router(state);
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accepting a connection: {e}");
                    continue;
                }
            },
        };
        // Answers go out as soon as they are written (no Nagle delay
        // against the client's delayed acknowledgements).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return;
            };
            let name = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| sotto_net::tls::certificate_name(c.as_ref()).ok());
            let service =
                TowerToHyperService::new(router.layer(Extension(ClientCertificate(name))));
            if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::InferenceError;

    #[test]
    fn every_refusal_has_a_listed_code_and_its_status() {
        let cases: Vec<(ApiError, StatusCode)> = vec![
            (
                GatewayError::UnknownModel("m".into()).into(),
                StatusCode::NOT_FOUND,
            ),
            (GatewayError::IdCount(0).into(), StatusCode::BAD_REQUEST),
            (
                GatewayError::NoKey(1).into(),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                GatewayError::ProviderNotMember("p".into()).into(),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                GatewayError::ProviderTimeout {
                    provider: "p".into(),
                    millis: 5,
                }
                .into(),
                StatusCode::GATEWAY_TIMEOUT,
            ),
            (
                GatewayError::ProviderFailed {
                    provider: "p".into(),
                    reason: "r".into(),
                }
                .into(),
                StatusCode::BAD_GATEWAY,
            ),
            (
                GatewayError::Inference(InferenceError::Missing {
                    provider: "p".into(),
                })
                .into(),
                StatusCode::BAD_GATEWAY,
            ),
            (
                GatewayError::AuditBacklog.into(),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (UsersError::NoCredentials.into(), StatusCode::UNAUTHORIZED),
            (UsersError::BadToken.into(), StatusCode::UNAUTHORIZED),
        ];
        for (error, status) in cases {
            assert_eq!(error.status, status, "{}", error.message);
            assert!(ERROR_CODES.contains(&error.code), "{}", error.code);
        }
    }
}
