//! TLS termination: the certificates the balancer serves, chosen by the client's SNI, loaded
//! and checked as a whole and swapped in atomically, so a reload (a renewed certificate) reaches
//! every new handshake while established connections keep the session they negotiated.
//!
//! A certificate is refused, and the certificates in force stay, when its files cannot be
//! read, hold no certificate or no private key, the key does not belong to the certificate,
//! or the certificate has expired or is not valid yet.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{
    CertificateDer, ClientHello, CryptoProvider, PrivateKeyDer, ResolvesServerCert,
};
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The chain: the certificate first, then its intermediates (certbot's `fullchain.pem`).
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why a certificate was refused.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The chain file holds no PEM certificate.
    #[error("{0}: no PEM certificate in it")]
    NoCertificate(PathBuf),
    /// The key file holds no PEM private key, or one rustls cannot use.
    #[error("{path}: {reason}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate does not parse as X.509.
    #[error("{path}: not a valid X.509 certificate: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// The private key is not the certificate's.
    #[error(
        "{key} is not the private key of the first certificate in {cert} (the server's \
         certificate must come first, then its intermediates)"
    )]
    KeyMismatch {
        /// The chain file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate is outside its validity period.
    #[error("{path}: the certificate {what} (valid {not_before} to {not_after})")]
    Validity {
        /// The file.
        path: PathBuf,
        /// "expired" or "is not valid yet".
        what: &'static str,
        /// Start of validity, RFC 3339.
        not_before: String,
        /// End of validity, RFC 3339.
        not_after: String,
    },
}

/// What one loaded certificate is, for logs, `status` and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The chain file it came from.
    pub file: PathBuf,
    /// The DNS names it serves (subject alternative names, else the common name).
    pub names: Vec<String>,
    /// Its serial number, hex.
    pub serial: String,
    /// Start of validity, seconds since the epoch.
    pub not_before: i64,
    /// End of validity, seconds since the epoch.
    pub not_after: i64,
    validity_text: (String, String),
}

impl CertSummary {
    /// An error when the certificate is not valid at `now`.
    pub fn valid_at(&self, now: SystemTime) -> Result<(), CertError> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        if (self.not_before..=self.not_after).contains(&now) {
            return Ok(());
        }
        Err(CertError::Validity {
            path: self.file.clone(),
            what: if now > self.not_after {
                "expired"
            } else {
                "is not valid yet"
            },
            not_before: self.validity_text.0.clone(),
            not_after: self.validity_text.1.clone(),
        })
    }
}

/// A complete set of certificates: the first is the default, for clients that send no SNI
/// or a name no certificate holds.
#[derive(Debug)]
pub struct Certificates {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// One summary per certificate, in configuration order.
    pub summaries: Vec<CertSummary>,
}

impl Certificates {
    /// Load and check every pair (the first is the default); the first problem refuses the
    /// whole set, so a reload never serves half of a new configuration. With `now`, a
    /// certificate outside its validity period is refused too (a reload); without, it is
    /// loaded and [`CertSummary::valid_at`] tells (a start serves it with a warning, so the
    /// site and its ACME renewal keep working).
    pub fn load(files: &[CertFiles], now: Option<SystemTime>) -> Result<Self, CertError> {
        let provider = provider();
        let mut loaded = Vec::with_capacity(files.len());
        for f in files {
            loaded.push(load_one(f, &provider, now)?);
        }
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut summaries = Vec::new();
        let mut default = None;
        for (key, summary) in loaded {
            let key = Arc::new(key);
            for name in &summary.names {
                // The first certificate to claim a name keeps it (configuration order).
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.entry(parent.to_string()),
                    None => exact.entry(name.clone()),
                }
                .or_insert_with(|| key.clone());
            }
            default.get_or_insert_with(|| key.clone());
            summaries.push(summary);
        }
        let default = default.ok_or_else(|| CertError::NoCertificate(PathBuf::new()))?;
        Ok(Self {
            default,
            exact,
            wildcard,
            summaries,
        })
    }

    /// The certificate for a client that asked for `server_name` (SNI).
    fn for_name(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return self.default.clone();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return k.clone();
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
            .clone()
    }
}

/// The balancer's certificate resolver: rustls asks it on every handshake; a reload swaps the
/// whole set under it.
#[derive(Debug)]
pub struct CertResolver {
    current: ArcSwap<Certificates>,
}

impl CertResolver {
    /// A resolver serving `certs`.
    pub fn new(certs: Certificates) -> Self {
        Self {
            current: ArcSwap::from_pointee(certs),
        }
    }

    /// Serve `certs` to every handshake from now on.
    pub fn replace(&self, certs: Certificates) {
        self.current.store(Arc::new(certs));
    }

    /// What is being served.
    pub fn summaries(&self) -> Vec<CertSummary> {
        self.current.load().summaries.clone()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().for_name(hello.server_name()))
    }
}

fn provider() -> Arc<CryptoProvider> {
    pingora::tls::install_default_crypto_provider();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn load_one(
    f: &CertFiles,
    provider: &CryptoProvider,
    now: Option<SystemTime>,
) -> Result<(CertifiedKey, CertSummary), CertError> {
    let chain_pem = read(&f.cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Parse {
            path: f.cert.clone(),
            reason: e.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(CertError::NoCertificate(f.cert.clone()));
    };
    let summary = inspect(&f.cert, leaf)?;
    if let Some(now) = now {
        summary.valid_at(now)?;
    }
    let key_pem = read(&f.key)?;
    if String::from_utf8_lossy(&key_pem).contains("ENCRYPTED") {
        return Err(CertError::BadKey {
            path: f.key.clone(),
            reason: "the private key is encrypted; give rtsup a decrypted one \
                     (openssl pkey -in KEY -out KEY.plain)"
                .into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| CertError::BadKey {
        path: f.key.clone(),
        reason: format!("no usable PEM private key ({e})"),
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError::BadKey {
            path: f.key.clone(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    if certified.keys_match().is_err() {
        return Err(CertError::KeyMismatch {
            cert: f.cert.clone(),
            key: f.key.clone(),
        });
    }
    Ok((certified, summary))
}

/// Names, serial and validity of `leaf`.
fn inspect(path: &Path, leaf: &CertificateDer<'_>) -> Result<CertSummary, CertError> {
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).map_err(|e| CertError::Parse {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let validity = cert.validity();
    let mut names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .map(str::to_ascii_lowercase)
            .collect();
    }
    Ok(CertSummary {
        file: path.to_path_buf(),
        names,
        serial: cert.raw_serial_as_string(),
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        validity_text: (
            validity.not_before.to_string(),
            validity.not_after.to_string(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, date_time_ymd};

    /// A self-signed certificate for `names`, valid `from`..`to` (years), written to `dir`.
    fn cert(dir: &Path, tag: &str, names: &[&str], years: (i32, i32)) -> CertFiles {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.not_before = date_time_ymd(years.0, 1, 1);
        params.not_after = date_time_ymd(years.1, 1, 1);
        let key = KeyPair::generate().expect("key");
        let c = params.self_signed(&key).expect("sign");
        let files = CertFiles {
            cert: dir.join(format!("{tag}.pem")),
            key: dir.join(format!("{tag}.key")),
        };
        std::fs::write(&files.cert, c.pem()).expect("write cert");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rtsup-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("tmp dir");
        d
    }

    fn now() -> SystemTime {
        SystemTime::now()
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_the_default() {
        let d = tmp("sni");
        let a = cert(&d, "a", &["example.com"], (2020, 2090));
        let b = cert(&d, "b", &["*.example.com", "chat.other.org"], (2020, 2090));
        let certs = Certificates::load(&[a, b], Some(now())).expect("load");
        let serial = |k: &Arc<CertifiedKey>| k.cert[0].clone();
        let a_cert = serial(&certs.default);
        let b_cert = certs.exact["chat.other.org"].cert[0].clone();
        assert_ne!(a_cert, b_cert);
        for (name, want) in [
            (Some("example.com"), &a_cert),
            (Some("EXAMPLE.com."), &a_cert),
            (Some("chat.example.com"), &b_cert),
            (Some("chat.other.org"), &b_cert),
            (Some("a.b.example.com"), &a_cert), // a wildcard covers one label only
            (Some("unknown.net"), &a_cert),
            (None, &a_cert),
        ] {
            assert_eq!(&serial(&certs.for_name(name)), want, "{name:?}");
        }
        assert_eq!(
            certs.summaries[1].names,
            ["*.example.com", "chat.other.org"]
        );
    }

    #[test]
    fn bad_certificates_are_refused_with_the_file_named() {
        let d = tmp("bad");
        let good = cert(&d, "good", &["example.com"], (2020, 2090));
        let expired = cert(&d, "old", &["example.com"], (2000, 2001));
        let future = cert(&d, "future", &["example.com"], (2080, 2090));
        let other = cert(&d, "other", &["example.com"], (2020, 2090));
        let mismatch = CertFiles {
            cert: good.cert.clone(),
            key: other.key.clone(),
        };
        let garbage = d.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").expect("write");
        let no_pem = CertFiles {
            cert: garbage.clone(),
            key: good.key.clone(),
        };
        let no_key = CertFiles {
            cert: good.cert.clone(),
            key: garbage.clone(),
        };
        let missing = CertFiles {
            cert: d.join("missing.pem"),
            key: good.key.clone(),
        };
        let check = |files: &CertFiles, want: &str| {
            let e = Certificates::load(&[good.clone(), files.clone()], Some(now()))
                .expect_err("must be refused")
                .to_string();
            assert!(e.contains(want), "{e:?} should say {want:?}");
        };
        check(&expired, "old.pem: the certificate expired");
        check(&future, "future.pem: the certificate is not valid yet");
        check(&mismatch, "other.key is not the private key of");
        // Loaded without a date: an expired certificate is served (a start), and says so.
        let old = Certificates::load(std::slice::from_ref(&expired), None).expect("undated");
        assert!(old.summaries[0].valid_at(now()).is_err());
        check(&no_pem, "garbage.pem: no PEM certificate");
        check(&no_key, "garbage.pem: no usable PEM private key");
        check(&missing, "missing.pem: No such file");
        Certificates::load(&[good], Some(now())).expect("the good one alone loads");
    }

    #[test]
    fn a_replaced_set_serves_the_next_handshake() {
        let d = tmp("swap");
        let one = cert(&d, "one", &["example.com"], (2020, 2090));
        let two = cert(&d, "two", &["example.com"], (2020, 2090));
        let r = CertResolver::new(Certificates::load(&[one], Some(now())).expect("one"));
        let before = r.summaries()[0].serial.clone();
        r.replace(Certificates::load(&[two], Some(now())).expect("two"));
        assert_ne!(r.summaries()[0].serial, before);
    }
}
