//! The `identity_sig` claim (auth-contract §1.6): the HMAC that binds a token to a per-identity
//! secret, so that resetting the secret revokes every token issued for that identity.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// §1.6: base64url-nopad(HMAC-SHA256(key = identity_secret ‖ server_secret as UTF-8 text, msg = identity)).
///
/// The secrets are hex strings but Kazoo uses them as text, identity secret first; they are
/// deliberately not hex-decoded. The result is always 43 characters.
pub fn identity_sig(identity_secret: &str, server_secret: &str, identity: &str) -> String {
    URL_SAFE_NO_PAD.encode(
        mac(identity_secret, server_secret, identity)
            .finalize()
            .into_bytes(),
    )
}

/// Constant-time comparison against a received signature; empty received → false.
///
/// Kazoo compares the received text with plain equality (§1.6). Strict base64url-nopad decoding
/// is a bijection between 43-character texts and 32-byte tags, so decoding the received value and
/// letting `hmac` compare the tags in constant time accepts exactly what Kazoo accepts: padded,
/// standard-alphabet or non-canonical spellings of the right tag are refused, as they are there.
pub fn verify_identity_sig(
    identity_secret: &str,
    server_secret: &str,
    identity: &str,
    received: &str,
) -> bool {
    if received.is_empty() {
        return false;
    }
    let Ok(tag) = URL_SAFE_NO_PAD.decode(received) else {
        return false;
    };
    mac(identity_secret, server_secret, identity)
        .verify_slice(&tag)
        .is_ok()
}

fn mac(identity_secret: &str, server_secret: &str, identity: &str) -> HmacSha256 {
    let key = [identity_secret.as_bytes(), server_secret.as_bytes()].concat();
    let mut mac = HmacSha256::new_from_slice(&key).expect("HMAC accepts keys of any length");
    mac.update(identity.as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const IDENTITY_SECRET: &str = "dd25037fc171a0fd3ea4f149ae682c15";
    const SERVER_SECRET: &str = "12079f354e3c8b2e3509213fe30ad834";
    const OWNER_ID: &str = "1a98b4af7f12177f02911ca8e29ad714";
    const EXPECTED: &str = "4K58MoGYRKjE2k1a-gIKsGraZIcxDb0ZpwhFd_Qgelk";

    #[test]
    fn identity_sig_matches_the_exec_vector_of_contract_1_6() {
        assert_eq!(
            identity_sig(IDENTITY_SECRET, SERVER_SECRET, OWNER_ID),
            EXPECTED
        );
    }

    #[test]
    fn identity_sig_is_always_43_characters() {
        assert_eq!(identity_sig("", "", "").len(), 43);
        assert_eq!(identity_sig("a", "b", &"x".repeat(1000)).len(), 43);
    }

    #[test]
    fn identity_secret_comes_first_in_the_key() {
        assert_ne!(
            identity_sig(SERVER_SECRET, IDENTITY_SECRET, OWNER_ID),
            EXPECTED
        );
    }

    #[test]
    fn verify_accepts_the_exec_vector() {
        assert!(verify_identity_sig(
            IDENTITY_SECRET,
            SERVER_SECRET,
            OWNER_ID,
            EXPECTED
        ));
    }

    #[test]
    fn verify_rejects_an_empty_signature() {
        assert!(!verify_identity_sig(
            IDENTITY_SECRET,
            SERVER_SECRET,
            OWNER_ID,
            ""
        ));
    }

    #[test]
    fn verify_rejects_a_signature_made_with_a_reset_secret() {
        let stale = identity_sig("00000000000000000000000000000000", SERVER_SECRET, OWNER_ID);
        assert!(!verify_identity_sig(
            IDENTITY_SECRET,
            SERVER_SECRET,
            OWNER_ID,
            &stale
        ));
    }

    #[test]
    fn verify_rejects_a_signature_for_another_identity() {
        let other = identity_sig(
            IDENTITY_SECRET,
            SERVER_SECRET,
            "b1b7cfe1fc65fd2f70512844d609650b",
        );
        assert!(!verify_identity_sig(
            IDENTITY_SECRET,
            SERVER_SECRET,
            OWNER_ID,
            &other
        ));
    }

    #[test]
    fn verify_rejects_other_spellings_of_the_right_tag_as_kazoo_string_equality_does() {
        let padded = format!("{EXPECTED}=");
        let standard_alphabet = EXPECTED.replace('-', "+").replace('_', "/");
        // Last character 'k' carries 2 unused low bits that are zero; 'l' sets one of them.
        let non_canonical = format!("{}l", &EXPECTED[..42]);
        for spelling in [padded, standard_alphabet, non_canonical] {
            assert!(
                !verify_identity_sig(IDENTITY_SECRET, SERVER_SECRET, OWNER_ID, &spelling),
                "{spelling} should be refused"
            );
        }
    }

    #[test]
    fn verify_rejects_a_truncated_signature() {
        assert!(!verify_identity_sig(
            IDENTITY_SECRET,
            SERVER_SECRET,
            OWNER_ID,
            &EXPECTED[..40]
        ));
    }

    proptest! {
        #[test]
        fn verify_accepts_what_identity_sig_produces(
            secret in ".{0,40}", server in ".{0,40}", identity in ".{0,40}"
        ) {
            let sig = identity_sig(&secret, &server, &identity);
            prop_assert!(verify_identity_sig(&secret, &server, &identity, &sig));
        }

        #[test]
        fn verify_never_panics_and_rejects_arbitrary_text(received in ".{0,60}") {
            prop_assume!(received != EXPECTED);
            prop_assert!(!verify_identity_sig(IDENTITY_SECRET, SERVER_SECRET, OWNER_ID, &received));
        }
    }
}
