//! Reading PEM files into what rustls takes, with errors that name the file and what was
//! wrong in it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The bytes of a set of files (a fingerprint: a reload happens only when they change);
/// with `optional`, a missing file reads as empty.
pub fn read_files(paths: &[PathBuf], optional: bool) -> Result<Vec<Vec<u8>>, String> {
    paths
        .iter()
        .map(|p| match std::fs::read(p) {
            Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            read => read.map_err(|e| format!("cannot read {}: {e}", p.display())),
        })
        .collect()
}

pub fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: holds no certificate", path.display()));
    }
    Ok(certs)
}

pub fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| format!("{}: no PEM private key in it: {e}", path.display()))
}

pub fn roots(path: &Path, pem: &[u8]) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, pem)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(Arc::new(roots))
}
