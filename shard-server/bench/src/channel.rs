//! The benchmark's gRPC channel: tonic's own, or vecshard's `H2Channel` (`--client-channel h2`),
//! which sends each call in one HTTP/2 write instead of tonic's three (see h2_channel.rs).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, Result};
use tonic::body::Body;
use vecshard_router::h2_channel::H2Channel;
use vecshard_security::{ClientSecurity, SecureChannel};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ClientChannel {
    Tonic,
    H2,
}

#[derive(Clone)]
pub enum BenchChannel {
    Tonic(SecureChannel),
    H2(H2Channel),
}

impl BenchChannel {
    /// A channel to `url`: TLS when it is `https://` (checked against the CA in `security`),
    /// with `security`'s API key on every call.
    pub async fn connect(
        kind: ClientChannel,
        url: &str,
        security: &ClientSecurity,
    ) -> Result<BenchChannel> {
        let security = if url.starts_with("https://") {
            security.clone()
        } else {
            security.clone().with_tls(None)
        };
        Ok(match kind {
            ClientChannel::Tonic => {
                let mut channel = security
                    .channel(url, Duration::from_secs(5), None)
                    .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
                // Connect now, so that a server that is not there fails here.
                std::future::poll_fn(|cx| tower_service::Service::poll_ready(&mut channel, cx))
                    .await
                    .with_context(|| format!("connecting to {url}"))?;
                BenchChannel::Tonic(channel)
            }
            // Generous: the bench's load batches and its full-speed searches must not time out.
            ClientChannel::H2 => BenchChannel::H2(
                H2Channel::new(
                    url,
                    Duration::from_secs(5),
                    Duration::from_secs(600),
                    security,
                )
                .map_err(|e| anyhow::anyhow!("{url}: {e}"))?,
            ),
        })
    }
}

impl tower_service::Service<http::Request<Body>> for BenchChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self {
            BenchChannel::Tonic(c) => c.poll_ready(cx).map_err(Into::into),
            BenchChannel::H2(c) => c.poll_ready(cx),
        }
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match self {
            BenchChannel::Tonic(c) => {
                let f = c.call(request);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
            BenchChannel::H2(c) => c.call(request),
        }
    }
}
