//! TLS 1.3 for QUIC, bound to node identities.
//!
//! Each node presents a self-signed X.509 certificate whose subject key is its own ed25519 key
//! (the certificate is made fresh from the identity at start; nothing in it but the key matters).
//! TLS 1.3's CertificateVerify proves possession of that key, so the peer's NodeId is
//! BLAKE3(certificate key). A client dials a NodeId and refuses a server whose key does not hash
//! to it; a server requires a client certificate and learns the client's NodeId from it. Only
//! ed25519 signatures are offered or accepted. ALPN is [`ALPN`].

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, SignatureVerificationAlgorithm, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error as TlsError, SignatureScheme};
use suprnova_dht::{Identity, NodeId};

/// ALPN protocol id: protocol name and major version.
pub const ALPN: &[u8] = b"suprnova/1";

/// The SNI every client sends (the expected NodeId is checked against the key, not the name).
pub const SERVER_NAME: &str = "suprnova.invalid";

/// DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE { SEQUENCE { OID 1.3.101.112 },
/// BIT STRING (0 unused bits) } followed by the 32-byte key.
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// DER prefix of an ed25519 PKCS#8 v1 private key (RFC 8410) followed by the 32-byte seed.
const ED25519_PKCS8_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The certificate could not be made.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// quinn refused the configuration.
    #[error("quic crypto: {0}")]
    Quic(#[source] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The QUIC endpoint could not be made on the socket.
    #[error("quic endpoint: {0}")]
    Endpoint(#[source] std::io::Error),
}

/// The ed25519 key in a certificate, parsed with webpki (never by pattern search: a crafted
/// certificate could carry a decoy key elsewhere).
pub fn certificate_key(cert: &CertificateDer<'_>) -> Option<[u8; 32]> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    let spki = parsed.subject_public_key_info();
    let bytes: &[u8] = spki.as_ref();
    let key = bytes.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    key.try_into().ok()
}

/// The NodeId a certificate proves (given a valid handshake signature).
pub fn certificate_node_id(cert: &CertificateDer<'_>) -> Option<NodeId> {
    certificate_key(cert).map(|k| NodeId::from_public_key(&k))
}

fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    // TLS 1.3 with AES-128-GCM is what QUIC's initial packets need; keep ChaCha20 as well.
    p.cipher_suites.retain(|s| s.tls13().is_some());
    Arc::new(p)
}

type SchemeMapping = [(SignatureScheme, &'static [&'static dyn SignatureVerificationAlgorithm])];

static ED25519_ALGS: [&dyn SignatureVerificationAlgorithm; 1] = [webpki::ring::ED25519];
static ED25519_MAPPING: &SchemeMapping = &[(SignatureScheme::ED25519, &ED25519_ALGS)];

fn ed25519_only(p: &CryptoProvider) -> WebPkiSupportedAlgorithms {
    let mut algs = p.signature_verification_algorithms;
    algs.all = &ED25519_ALGS;
    algs.mapping = ED25519_MAPPING;
    algs
}

/// Certificate and key of a node.
struct CertKey {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

fn cert_for(identity: &Identity) -> Result<CertKey, TlsSetupError> {
    let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(identity.seed());
    let key = PrivatePkcs8KeyDer::from(pkcs8);
    let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key, &rcgen::PKCS_ED25519)?;
    let params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])?;
    let cert = params.self_signed(&pair)?;
    Ok(CertKey { cert: cert.der().clone(), key })
}

/// Verifies the peer's certificate: one ed25519 certificate, and (for a server) the expected id.
#[derive(Debug)]
struct PeerVerifier {
    expected: Option<NodeId>,
    algs: WebPkiSupportedAlgorithms,
}

impl PeerVerifier {
    fn check(&self, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> Result<(), TlsError> {
        if !intermediates.is_empty() {
            return Err(TlsError::General("suprnova: unexpected certificate chain".into()));
        }
        let id = certificate_node_id(end_entity)
            .ok_or(TlsError::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        match self.expected {
            Some(want) if want != id => {
                Err(TlsError::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
            }
            _ => Ok(()),
        }
    }
}

impl PeerVerifier {
    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }
}

/// TLS 1.2 is never negotiated (TLS 1.3 only); both verifier roles refuse it the same way.
fn no_tls12() -> Result<HandshakeSignatureValid, TlsError> {
    Err(TlsError::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        self.check(end_entity, intermediates).map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        no_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        self.check(end_entity, intermediates).map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        no_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Makes QUIC crypto configurations for one identity.
pub struct TlsConfigs {
    provider: Arc<CryptoProvider>,
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl TlsConfigs {
    /// Builds the certificate for `identity`.
    pub fn new(identity: &Identity) -> Result<Self, TlsSetupError> {
        let ck = cert_for(identity)?;
        Ok(TlsConfigs { provider: provider(), cert: ck.cert, key: ck.key })
    }

    /// Our certificate.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    fn verifier(&self, expected: Option<NodeId>) -> Arc<PeerVerifier> {
        Arc::new(PeerVerifier { expected, algs: ed25519_only(&self.provider) })
    }

    /// Server side: requires a client certificate from every peer.
    pub fn server(&self) -> Result<quinn::crypto::rustls::QuicServerConfig, TlsSetupError> {
        let mut cfg = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(self.verifier(None))
            .with_single_cert(vec![self.cert.clone()], PrivateKeyDer::Pkcs8(self.key.clone_key()))?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        cfg.max_early_data_size = 0;
        quinn::crypto::rustls::QuicServerConfig::try_from(cfg).map_err(TlsSetupError::Quic)
    }

    /// Client side, dialling `expected`.
    pub fn client(&self, expected: NodeId) -> Result<quinn::crypto::rustls::QuicClientConfig, TlsSetupError> {
        let mut cfg = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(self.verifier(Some(expected)))
            .with_client_auth_cert(vec![self.cert.clone()], PrivateKeyDer::Pkcs8(self.key.clone_key()))?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        cfg.enable_early_data = false;
        quinn::crypto::rustls::QuicClientConfig::try_from(cfg).map_err(TlsSetupError::Quic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_carries_the_identity_key() {
        let id = Identity::from_seed([7; 32]);
        let cfgs = TlsConfigs::new(&id).unwrap();
        assert_eq!(certificate_key(cfgs.certificate()), Some(id.public_key()));
        assert_eq!(certificate_node_id(cfgs.certificate()), Some(id.id()));
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert_eq!(certificate_key(&CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00])), None);
        assert_eq!(certificate_key(&CertificateDer::from(Vec::new())), None);
    }
}
