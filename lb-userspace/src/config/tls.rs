//! TLS listeners' settings (NLB's TLS listener: certificates chosen by SNI,
//! a security policy, an ALPN policy) and what they load into: rustls
//! server configs, and client configs for `target_tls`. rustls with the ring
//! provider: no OpenSSL at build or run time.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{ring, CryptoProvider},
    pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
    SupportedProtocolVersion,
};
use serde::Deserialize;

/// One certificate chain and its key, PEM files.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// NLB's TLS security policies, by their names (a subset: the TLS 1.3 ones).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash, Default)]
pub enum SecurityPolicy {
    /// TLS 1.2 and 1.3, forward-secret AEAD suites only (NLB's default).
    #[default]
    #[serde(rename = "ELBSecurityPolicy-TLS13-1-2-2021-06")]
    Tls12And13,
    /// TLS 1.3 only.
    #[serde(rename = "ELBSecurityPolicy-TLS13-1-3-2021-06")]
    Tls13Only,
}

impl SecurityPolicy {
    pub fn name(self) -> &'static str {
        match self {
            SecurityPolicy::Tls12And13 => "ELBSecurityPolicy-TLS13-1-2-2021-06",
            SecurityPolicy::Tls13Only => "ELBSecurityPolicy-TLS13-1-3-2021-06",
        }
    }

    fn versions(self) -> &'static [&'static SupportedProtocolVersion] {
        static BOTH: [&SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        static TLS13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            SecurityPolicy::Tls12And13 => &BOTH,
            SecurityPolicy::Tls13Only => &TLS13,
        }
    }
}

/// NLB's ALPN policies.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash, Default)]
pub enum AlpnPolicy {
    #[default]
    None,
    HTTP1Only,
    HTTP2Only,
    /// HTTP/1.1 first, HTTP/2 allowed.
    HTTP2Optional,
    /// HTTP/2 first, HTTP/1.1 allowed.
    HTTP2Preferred,
}

impl AlpnPolicy {
    /// The server's protocols in its order of preference (rustls takes the
    /// first the client offers; with none in common it refuses the
    /// handshake, as NLB does).
    pub fn protocols(self) -> Vec<Vec<u8>> {
        let (h1, h2) = (b"http/1.1".to_vec(), b"h2".to_vec());
        match self {
            AlpnPolicy::None => vec![],
            AlpnPolicy::HTTP1Only => vec![h1],
            AlpnPolicy::HTTP2Only => vec![h2],
            AlpnPolicy::HTTP2Optional => vec![h1, h2],
            AlpnPolicy::HTTP2Preferred => vec![h2, h1],
        }
    }
}

/// What a TLS listener is built from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsSpec {
    pub certificates: Vec<Certificate>,
    pub policy: SecurityPolicy,
    pub alpn: AlpnPolicy,
}

/// TLS from the gateway to a group's targets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetTls {
    /// Verify the targets' certificates with these CAs (PEM); unset: not
    /// verified (as NLB does not).
    pub ca: Option<PathBuf>,
}

/// A certificate or key that cannot be used: which file, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {why}", path.display())]
pub struct TlsError {
    pub path: PathBuf,
    pub why: String,
}

fn err(path: &Path, why: impl Into<String>) -> TlsError {
    TlsError {
        path: path.into(),
        why: why.into(),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// Reads a chain and its key, and checks that they belong together.
pub fn load_certificate(c: &Certificate) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&c.cert)
        .map_err(|e| err(&c.cert, format!("reading the certificate: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(&c.cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(err(
            &c.cert,
            "no certificate in the file (PEM, BEGIN CERTIFICATE)",
        ));
    }
    webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| {
        err(
            &c.cert,
            format!("the first certificate does not parse: {e}"),
        )
    })?;
    let key = PrivateKeyDer::from_pem_file(&c.key).map_err(|e| {
        err(
            &c.key,
            format!("no usable private key (PEM; PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    let ck = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        err(
            &c.key,
            format!("does not go with {}: {e}", c.cert.display()),
        )
    })?;
    Ok(ck)
}

/// Picks the certificate for the client's SNI: the first whose names cover
/// it (wildcards too), else the first certificate (as NLB's default).
#[derive(Debug)]
struct BySni(Vec<Arc<CertifiedKey>>);

impl BySni {
    fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let name = sni.and_then(|s| ServerName::try_from(s.to_string()).ok());
        if let Some(name) = name {
            for ck in &self.0 {
                let ok = ck.end_entity_cert().ok().is_some_and(|der| {
                    webpki::EndEntityCert::try_from(der)
                        .is_ok_and(|c| c.verify_is_valid_for_subject_name(&name).is_ok())
                });
                if ok {
                    return Some(ck.clone());
                }
            }
        }
        self.0.first().cloned()
    }
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

/// A TLS listener's server config.
pub fn server_config(spec: &TlsSpec) -> Result<ServerConfig, TlsError> {
    let keys = spec
        .certificates
        .iter()
        .map(|c| load_certificate(c).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(spec.policy.versions())
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni(keys)));
    cfg.alpn_protocols = spec.alpn.protocols();
    Ok(cfg)
}

/// The client config for a group's `target_tls`.
pub fn target_config(t: &TargetTls) -> Result<Arc<ClientConfig>, TlsError> {
    let Some(ca) = &t.ca else {
        return Ok(client_config());
    };
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| err(ca, format!("reading the CA certificates: {e}")))?;
    for c in certs {
        let c = c.map_err(|e| err(ca, format!("not a PEM certificate: {e}")))?;
        roots
            .add(c)
            .map_err(|e| err(ca, format!("not a CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(err(ca, "no certificate in the file"));
    }
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

// Targets' certificates are not verified by HTTPS health checks (as NLB's
// are not: a target often has a self-signed or internal certificate), nor
// by `target_tls` without a CA.

/// Accepts any certificate, but checks the handshake's signatures with it
/// (so the peer holds the key of the certificate it sent).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The client config of every HTTPS check, and of `target_tls` without a
/// CA (built once).
pub fn client_config() -> Arc<ClientConfig> {
    static CFG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CFG.get_or_init(|| {
        let provider = Arc::new(ring::default_provider());
        let cfg = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        Arc::new(cfg)
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_policies_order_as_nlb_does() {
        assert!(AlpnPolicy::None.protocols().is_empty());
        assert_eq!(AlpnPolicy::HTTP2Only.protocols(), vec![b"h2".to_vec()]);
        assert_eq!(AlpnPolicy::HTTP2Optional.protocols()[0], b"http/1.1");
        assert_eq!(AlpnPolicy::HTTP2Preferred.protocols()[0], b"h2");
    }

    #[test]
    fn a_missing_or_wrong_file_is_named() {
        let c = Certificate {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        };
        let e = load_certificate(&c).unwrap_err();
        assert_eq!(e.path, PathBuf::from("/nonexistent/cert.pem"));
        let dir = std::env::temp_dir().join(format!("lb-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("c.pem");
        std::fs::write(&cert, "not pem").unwrap();
        let e = load_certificate(&Certificate {
            cert: cert.clone(),
            key: cert.clone(),
        })
        .unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
