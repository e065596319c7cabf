//! RSA key material as Kazoo stores it: the `private_key.pem` attachment of a `system_auth/<kid>`
//! doc (auth-contract §2.1, §2.3). Parsing, encoding and generation only; no I/O.

use std::fmt;

use rsa::pkcs1::der::Decode as _;
use rsa::pkcs1::{DecodeRsaPrivateKey as _, EncodeRsaPrivateKey as _, LineEnding};
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};

/// Keys below this size are refused: they are breakable, and PKCS#1 v1.5 cannot sign RS512 with a
/// modulus under 752 bits, which would make `jwt::sign` fail. Kazoo's keys are 2048 bits (§1.4).
pub const MIN_MODULUS_BITS: usize = 1024;

const PKCS1_LABEL: &str = "RSA PRIVATE KEY";
const PKCS8_LABEL: &str = "PRIVATE KEY";
const GENERATED_BITS: usize = 2048;

#[derive(Debug)]
pub enum KeyError {
    /// The text holds no PEM block, or more than one (§2.1: exactly one).
    PemBlockCount(usize),
    /// The PEM block is not well formed.
    Pem(String),
    /// The PEM block is well formed but is not an RSA private key.
    UnsupportedLabel(String),
    /// The DER inside the block is not a valid RSA private key.
    Der(String),
    /// The numbers are rejected by the `rsa` crate (modulus, exponent, consistency).
    InvalidKey(rsa::Error),
    /// The modulus is smaller than [`MIN_MODULUS_BITS`].
    TooSmall { bits: usize },
    /// PEM encoding failed.
    Encode(String),
    /// Key generation failed.
    Generate(rsa::Error),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::PemBlockCount(n) => write!(f, "expected exactly one PEM block, found {n}"),
            KeyError::Pem(e) => write!(f, "malformed PEM: {e}"),
            KeyError::UnsupportedLabel(label) => write!(
                f,
                "unsupported PEM label {label:?}: expected {PKCS1_LABEL:?} or {PKCS8_LABEL:?}"
            ),
            KeyError::Der(e) => write!(f, "malformed RSA private key: {e}"),
            KeyError::InvalidKey(e) => write!(f, "invalid RSA key: {e}"),
            KeyError::TooSmall { bits } => write!(
                f,
                "RSA modulus of {bits} bits is below the minimum of {MIN_MODULUS_BITS}"
            ),
            KeyError::Encode(e) => write!(f, "cannot encode RSA private key: {e}"),
            KeyError::Generate(e) => write!(f, "cannot generate RSA key: {e}"),
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyError::InvalidKey(e) | KeyError::Generate(e) => Some(e),
            _ => None,
        }
    }
}

/// §2.1/§2.3: the private_key.pem attachment: exactly one PEM block, PKCS#1 "RSA PRIVATE KEY" (or PKCS#8 "PRIVATE KEY"). Keep only (n, e). Any exponent the rsa crate accepts, in particular e = 2049.
///
/// Only the ASN.1 structure is read, as Kazoo's `public_key:pem_entry_decode` does: a verifier
/// needs (n, e), and the private numbers are neither checked nor kept.
pub fn public_key_from_private_pem(pem: &str) -> Result<RsaPublicKey, KeyError> {
    let (label, der) = single_pem_block(pem)?;
    let rsa_der = match label.as_str() {
        PKCS1_LABEL => der,
        PKCS8_LABEL => pkcs8_inner_rsa_key(&der)?,
        _ => return Err(KeyError::UnsupportedLabel(label)),
    };
    let key =
        rsa::pkcs1::RsaPrivateKey::from_der(&rsa_der).map_err(|e| KeyError::Der(e.to_string()))?;
    let n = BigUint::from_bytes_be(key.modulus.as_bytes());
    let e = BigUint::from_bytes_be(key.public_exponent.as_bytes());
    let public = RsaPublicKey::new(n, e).map_err(KeyError::InvalidKey)?;
    check_size(public.n().bits())?;
    Ok(public)
}

/// The full private key from the same attachment, for signing. The `rsa` crate checks that the
/// numbers are consistent; multi-prime keys are refused by it.
pub fn private_key_from_pem(pem: &str) -> Result<RsaPrivateKey, KeyError> {
    let (label, der) = single_pem_block(pem)?;
    let key = match label.as_str() {
        PKCS1_LABEL => {
            RsaPrivateKey::from_pkcs1_der(&der).map_err(|e| KeyError::Der(e.to_string()))
        }
        PKCS8_LABEL => {
            RsaPrivateKey::from_pkcs8_der(&der).map_err(|e| KeyError::Der(e.to_string()))
        }
        _ => Err(KeyError::UnsupportedLabel(label)),
    }?;
    check_size(key.n().bits())?;
    Ok(key)
}

/// PKCS#1 PEM of a private key, as Kazoo stores it (for `kz-groups init` later).
///
/// LF line endings and a trailing newline, like OTP's `public_key:pem_encode`.
pub fn private_key_to_pem(key: &RsaPrivateKey) -> Result<String, KeyError> {
    key.to_pkcs1_pem(LineEnding::LF)
        .map(|pem| pem.as_str().to_owned())
        .map_err(|e| KeyError::Encode(e.to_string()))
}

/// A fresh 2048-bit key with e = 65537. Kazoo generates e = 2049 (§1.4), but it reads e from the
/// PEM, so 65537 interoperates (§2.4) and is what the `rsa` crate generates by default.
pub fn generate_private_key() -> Result<RsaPrivateKey, KeyError> {
    RsaPrivateKey::new(&mut rand::thread_rng(), GENERATED_BITS).map_err(KeyError::Generate)
}

/// Splits off the one PEM block, returning its label and DER bytes.
fn single_pem_block(pem: &str) -> Result<(String, Vec<u8>), KeyError> {
    // Stored attachments may carry extra surrounding whitespace; the PEM grammar itself does not.
    let pem = pem.trim();
    let blocks = pem.matches("-----BEGIN ").count();
    if blocks != 1 {
        return Err(KeyError::PemBlockCount(blocks));
    }
    let (label, der) =
        rsa::pkcs1::pem::decode_vec(pem.as_bytes()).map_err(|e| KeyError::Pem(e.to_string()))?;
    Ok((label.to_owned(), der))
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo`, after checking it is an RSA key.
fn pkcs8_inner_rsa_key(der: &[u8]) -> Result<Vec<u8>, KeyError> {
    let info =
        rsa::pkcs8::PrivateKeyInfo::from_der(der).map_err(|e| KeyError::Der(e.to_string()))?;
    if info.algorithm.oid != rsa::pkcs1::ALGORITHM_OID {
        return Err(KeyError::Der(format!(
            "PKCS#8 key algorithm {} is not rsaEncryption",
            info.algorithm.oid
        )));
    }
    Ok(info.private_key.to_vec())
}

fn check_size(bits: usize) -> Result<(), KeyError> {
    if bits < MIN_MODULUS_BITS {
        return Err(KeyError::TooSmall { bits });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KAZOO_E2049: &str = include_str!("../../tests/fixtures/kazoo_e2049.pem");
    const OTHER_E2049: &str = include_str!("../../tests/fixtures/other_e2049.pem");
    const PKCS8_E65537: &str = include_str!("../../tests/fixtures/pkcs8_e65537.pem");

    #[test]
    fn the_kazoo_fixture_is_a_pkcs1_pem_with_e_2049() {
        assert!(KAZOO_E2049.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
        let public = public_key_from_private_pem(KAZOO_E2049).unwrap();
        assert_eq!(public.e(), &BigUint::from(2049u32));
        assert_eq!(public.n().bits(), 2048);
    }

    #[test]
    fn the_rsa_crate_accepts_the_full_private_key_with_e_2049() {
        let private = private_key_from_pem(KAZOO_E2049).unwrap();
        assert_eq!(private.e(), &BigUint::from(2049u32));
        assert_eq!(
            private.to_public_key(),
            public_key_from_private_pem(KAZOO_E2049).unwrap()
        );
    }

    #[test]
    fn the_two_e2049_fixtures_are_different_keys() {
        assert_ne!(
            public_key_from_private_pem(KAZOO_E2049).unwrap(),
            public_key_from_private_pem(OTHER_E2049).unwrap()
        );
    }

    #[test]
    fn pkcs8_private_keys_are_accepted_too() {
        assert!(PKCS8_E65537.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let public = public_key_from_private_pem(PKCS8_E65537).unwrap();
        assert_eq!(public.e(), &BigUint::from(65537u32));
        let private = private_key_from_pem(PKCS8_E65537).unwrap();
        assert_eq!(private.to_public_key(), public);
    }

    #[test]
    fn crlf_line_endings_and_surrounding_whitespace_are_accepted() {
        let crlf = format!("\n  {}\n\n", KAZOO_E2049.replace('\n', "\r\n"));
        assert_eq!(
            public_key_from_private_pem(&crlf).unwrap(),
            public_key_from_private_pem(KAZOO_E2049).unwrap()
        );
        assert!(private_key_from_pem(&crlf).is_ok());
    }

    #[test]
    fn two_pem_blocks_are_refused() {
        let two = format!("{KAZOO_E2049}{OTHER_E2049}");
        assert!(matches!(
            public_key_from_private_pem(&two),
            Err(KeyError::PemBlockCount(2))
        ));
        assert!(matches!(
            private_key_from_pem(&two),
            Err(KeyError::PemBlockCount(2))
        ));
    }

    #[test]
    fn text_without_a_pem_block_is_refused() {
        for text in ["", "not a key", "-----END RSA PRIVATE KEY-----"] {
            assert!(matches!(
                public_key_from_private_pem(text),
                Err(KeyError::PemBlockCount(0))
            ));
        }
    }

    #[test]
    fn a_public_key_pem_is_refused() {
        let public = public_key_from_private_pem(KAZOO_E2049).unwrap();
        let pem = rsa::pkcs1::EncodeRsaPublicKey::to_pkcs1_pem(&public, LineEnding::LF).unwrap();
        assert!(matches!(
            public_key_from_private_pem(&pem),
            Err(KeyError::UnsupportedLabel(label)) if label == "RSA PUBLIC KEY"
        ));
    }

    #[test]
    fn a_truncated_body_is_refused() {
        let mut lines: Vec<&str> = KAZOO_E2049.lines().collect();
        lines.remove(5);
        let truncated = lines.join("\n");
        assert!(public_key_from_private_pem(&truncated).is_err());
        assert!(private_key_from_pem(&truncated).is_err());
    }

    #[test]
    fn a_pkcs8_body_under_a_pkcs1_label_is_refused() {
        let relabelled = PKCS8_E65537.replace("PRIVATE KEY", "RSA PRIVATE KEY");
        assert!(matches!(
            public_key_from_private_pem(&relabelled),
            Err(KeyError::Der(_))
        ));
    }

    #[test]
    fn private_key_to_pem_writes_pkcs1_that_reads_back() {
        let key = private_key_from_pem(PKCS8_E65537).unwrap();
        let pem = private_key_to_pem(&key).unwrap();
        assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
        assert!(pem.ends_with("-----END RSA PRIVATE KEY-----\n"));
        assert!(!pem.contains('\r'));
        assert_eq!(private_key_from_pem(&pem).unwrap(), key);
    }

    #[test]
    fn private_key_to_pem_round_trips_the_e2049_key() {
        let key = private_key_from_pem(KAZOO_E2049).unwrap();
        let pem = private_key_to_pem(&key).unwrap();
        assert_eq!(
            private_key_from_pem(&pem).unwrap().e(),
            &BigUint::from(2049u32)
        );
    }

    #[test]
    fn generate_private_key_makes_a_2048_bit_key_with_e_65537() {
        let key = generate_private_key().unwrap();
        assert_eq!(key.n().bits(), 2048);
        assert_eq!(key.e(), &BigUint::from(65537u32));
        let pem = private_key_to_pem(&key).unwrap();
        assert_eq!(
            public_key_from_private_pem(&pem).unwrap(),
            key.to_public_key()
        );
    }

    #[test]
    fn keys_below_1024_bits_are_refused() {
        let small = RsaPrivateKey::new(&mut rand::thread_rng(), 512).unwrap();
        let pem = private_key_to_pem(&small).unwrap();
        assert!(matches!(
            public_key_from_private_pem(&pem),
            Err(KeyError::TooSmall { bits: 512 })
        ));
        assert!(matches!(
            private_key_from_pem(&pem),
            Err(KeyError::TooSmall { bits: 512 })
        ));
    }

    #[test]
    fn errors_display_a_reason() {
        let err = public_key_from_private_pem("").unwrap_err();
        assert_eq!(err.to_string(), "expected exactly one PEM block, found 0");
    }
}
