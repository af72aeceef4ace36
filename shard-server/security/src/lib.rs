//! Transport security shared by every vecshard process.
//!
//! - `server`: listeners that speak TLS (or plain TCP), hand each connection its `PeerInfo`
//!   (did the client show a certificate of the collection's CA?), and reload their
//!   certificate files when these change, without touching open connections.
//! - `client`: the other side: TLS connections that present the component's certificate, and
//!   gRPC channels that also carry an API key.
//! - `keys`: the read-write and read-only API-key sets, reloaded from their files, compared in
//!   constant time.
//! - `policy`: who may do what: probes open, internal RPCs for certificate holders only, writes
//!   for read-write keys (pure: `Policy::decide`), and the gRPC layer that applies it.
//! - `pki`: a CA and the certificates it issues (`vecshard-server dev --tls`, tests).

pub mod client;
mod io;
pub mod keys;
pub mod pki;
pub mod policy;
mod reload;
pub mod server;
mod tls_files;

pub use client::{
    current_client, scoped, set_process_client, ClientSecurity, ClientTls, SecureChannel,
};
pub use keys::{ApiKeys, KeySet, Role};
pub use policy::{Access, AuthLayer, Denial, Policy};
pub use server::{ClientAuth, Conn, PeerInfo, SecureListener, ServerTls};

/// The one crypto provider of every TLS config vecshard builds (see Cargo.toml).
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}
