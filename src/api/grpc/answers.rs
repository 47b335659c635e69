//! The gRPC answers tonic makes by itself, put into our wording: an over-size message is
//! RESOURCE_EXHAUSTED (tonic says OUT_OF_RANGE), and an unknown service or method is
//! UNIMPLEMENTED naming it (tonic sends no message).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::{HeaderValue, Request, Response};

use crate::error::clip;

/// Wraps the gRPC server's routes (`Server::builder().layer(AnswersLayer)`).
#[derive(Debug, Clone, Copy, Default)]
pub struct AnswersLayer;

impl<S> tower::Layer<S> for AnswersLayer {
    type Service = Answers<S>;

    fn layer(&self, inner: S) -> Answers<S> {
        Answers(inner)
    }
}

#[derive(Debug, Clone)]
pub struct Answers<S>(S);

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for Answers<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let path = req.uri().path().to_owned();
        let answer = self.0.call(req);
        Box::pin(async move { answer.await.map(|resp| rewrite(resp, &path)) })
    }
}

fn rewrite<B>(mut resp: Response<B>, path: &str) -> Response<B> {
    let headers = resp.headers();
    let status = headers.get("grpc-status");
    let message = headers
        .get("grpc-message")
        .map(|m| m.to_str().unwrap_or(""))
        .unwrap_or("");
    let code = |c: &str| status.is_some_and(|v| v == c);
    if code("11")
        && (message.contains("message%20length%20too%20large")
            || message.contains("message length too large"))
    {
        resp.headers_mut()
            .insert("grpc-status", HeaderValue::from_static("8"));
    } else if code("12") && message.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&percent_encode(&unknown(path))) {
            resp.headers_mut().insert("grpc-message", v);
        }
    }
    resp
}

/// grpc-go's wording for a path no service answers: `/pkg.Service/Method`.
fn unknown(path: &str) -> String {
    match path.trim_start_matches('/').split_once('/') {
        Some((service, method)) if !service.is_empty() && !method.is_empty() => format!(
            "unknown method {} for service {}",
            clip(method),
            clip(service)
        ),
        _ => format!("unknown service {}", clip(path)),
    }
}

/// grpc-message is percent-encoded (gRPC over HTTP/2: bytes outside 0x20..=0x7e and '%').
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_paths_are_named_like_grpc_go_names_them() {
        assert_eq!(
            unknown("/inference.GRPCInferenceService/Nope"),
            "unknown method \"Nope\" for service \"inference.GRPCInferenceService\""
        );
        assert_eq!(unknown("/nope"), "unknown service \"/nope\"");
        assert_eq!(percent_encode("a%b\u{e9}"), "a%25b%C3%A9");
    }
}
