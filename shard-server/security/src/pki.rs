//! A certificate authority and the certificates it issues: what `vecshard-server dev --tls`
//! writes for a local cluster, and what the tests use. ECDSA P-256 keys.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;

/// A CA: its certificate (PEM) and what signs with it.
pub struct Authority {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

fn err(e: rcgen::Error) -> String {
    format!("certificate generation: {e}")
}

fn validity(params: &mut CertificateParams, not_before: OffsetDateTime, valid: Duration) {
    params.not_before = not_before;
    params.not_after = not_before + valid;
}

impl Authority {
    /// A new CA named `name`, valid from five minutes ago (clock skew) for `valid`.
    pub fn new(name: &str, valid: Duration) -> Result<Authority, String> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(
            &mut params,
            OffsetDateTime::now_utc() - Duration::from_secs(300),
            valid,
        );
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.self_signed(&key).map_err(err)?;
        Ok(Authority {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA from its certificate and key (PEM), to issue more certificates with.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Authority, String> {
        let key = KeyPair::from_pem(key_pem).map_err(err)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(err)?;
        Ok(Authority {
            cert_pem: cert_pem.to_string(),
            issuer,
        })
    }

    /// The CA's private key (PEM).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A certificate for `names` (DNS names or IP addresses), usable by servers and clients
    /// (a replica is both), valid from `not_before` for `valid`.
    pub fn issue_at(
        &self,
        common_name: &str,
        names: &[String],
        not_before: OffsetDateTime,
        valid: Duration,
    ) -> Result<Issued, String> {
        let mut params = CertificateParams::new(names.to_vec()).map_err(err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity(&mut params, not_before, valid);
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    pub fn issue(
        &self,
        common_name: &str,
        names: &[String],
        valid: Duration,
    ) -> Result<Issued, String> {
        let now = OffsetDateTime::now_utc() - Duration::from_secs(300);
        self.issue_at(common_name, names, now, valid)
    }
}

/// Where `write_dev_pki` put its files.
#[derive(Clone, Debug)]
pub struct DevPki {
    pub ca: PathBuf,
    /// The CA's key: issue more certificates with it (a client certificate for vecshardctl,
    /// a renewed server certificate).
    pub ca_key: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// For a local cluster: a CA and one certificate for `localhost`/`127.0.0.1` that every
/// process uses, as server and as client, written into `dir` (kept across restarts: a CA
/// that clients were given stays valid). Keys are written readable by the owner only.
pub fn write_dev_pki(dir: &Path) -> Result<DevPki, String> {
    let pki = DevPki {
        ca: dir.join("ca.crt"),
        ca_key: dir.join("ca.key"),
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    if [&pki.ca, &pki.ca_key, &pki.cert, &pki.key]
        .iter()
        .all(|p| p.exists())
    {
        return Ok(pki);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    let ca = Authority::new("vecshard dev CA", 10 * YEAR)?;
    let names = ["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    let issued = ca.issue("vecshard dev", &names, YEAR)?;
    write_private(&pki.key, &issued.key_pem)?;
    write_private(&pki.ca_key, &ca.key_pem())?;
    std::fs::write(&pki.cert, &issued.cert_pem)
        .and_then(|()| std::fs::write(&pki.ca, &ca.cert_pem))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(pki)
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, contents: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}
