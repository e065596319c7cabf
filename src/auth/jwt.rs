//! Kazoo auth tokens (auth-contract §1): JWS compact parsing, RS256/384/512 signatures and `exp`,
//! and signing the way Kazoo signs. Pure functions: finding the key for a `kid` is the caller's job.

use std::fmt;
use std::sync::Arc;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use rsa::pkcs8::AssociatedOid;
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};

/// §1.1: Kazoo's decoder maps `-`→`+` and `_`→`/` before a standard decode, and accepts padded
/// input as well as unpadded. Decoding the mapped text with this engine accepts the same inputs.
const LENIENT_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
}

impl Alg {
    /// The header value, exactly as Kazoo writes and checks it (case-sensitive, §1.2).
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
        }
    }

    fn from_header_value(value: &str) -> Option<Alg> {
        match value {
            "RS256" => Some(Alg::RS256),
            "RS384" => Some(Alg::RS384),
            "RS512" => Some(Alg::RS512),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// Not three dot-separated base64 parts with JSON-object header and payload (§1.7 step 2).
    Malformed,
    /// `alg` missing or not RS256/RS384/RS512 (§1.2), e.g. `none` or `HS256`.
    UnsupportedAlg,
    /// No usable `kid`, so no key can be found (§1.2).
    MissingKid,
    /// The signature does not verify with the key named by `kid` (§1.7 step 5).
    BadSignature,
    /// `exp` is not strictly after now (§1.7 step 6); the only failure with its own response (§1.7.1).
    Expired,
    /// `exp` is present but not a number (§1.7 step 6).
    BadExp,
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JwtError::Malformed => "malformed token",
            JwtError::UnsupportedAlg => "algorithm not supported",
            JwtError::MissingKid => "token has no kid",
            JwtError::BadSignature => "invalid token signature",
            JwtError::Expired => "token expired",
            JwtError::BadExp => "token exp is not a number",
        })
    }
}

impl std::error::Error for JwtError {}

/// A parsed, not yet verified token.
#[derive(Debug, Clone)]
pub struct Jwt {
    header: Map<String, Value>,
    claims: Arc<Map<String, Value>>,
    /// The received `header.payload` text: the signature covers it, not any re-encoding (§1.1).
    signing_input: String,
    signature: Vec<u8>,
}

impl Jwt {
    /// §1.7 step 2: exactly 3 dot-separated parts; header and payload base64url (padding optional, standard alphabet also accepted) decoding to JSON objects. Never panics.
    ///
    /// The signature part must be valid base64 too (it is empty for `alg: none`).
    pub fn parse(token: &str) -> Result<Jwt, JwtError> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let header = decode_object(header_b64)?;
        let claims = Arc::new(decode_object(payload_b64)?);
        let signature = decode_part(signature_b64)?;
        let signing_input = token[..header_b64.len() + 1 + payload_b64.len()].to_owned();
        Ok(Jwt {
            header,
            claims,
            signing_input,
            signature,
        })
    }

    pub fn header(&self) -> &Map<String, Value> {
        &self.header
    }

    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// The claims, shared (an identity keeps them for `GET /v2/token_auth`).
    pub fn shared_claims(&self) -> Arc<Map<String, Value>> {
        self.claims.clone()
    }

    /// §1.2: alg must be exactly "RS256"/"RS384"/"RS512"; typ not checked.
    pub fn alg(&self) -> Result<Alg, JwtError> {
        self.header
            .get("alg")
            .and_then(Value::as_str)
            .and_then(Alg::from_header_value)
            .ok_or(JwtError::UnsupportedAlg)
    }

    /// kid as a string; None if absent or not a string.
    pub fn kid(&self) -> Option<&str> {
        self.header.get("kid").and_then(Value::as_str)
    }

    /// The `kid` to look the key up by, or `MissingKid` (§1.2). An empty `kid` counts as missing:
    /// it can name no `system_auth` doc, and `GET /system_auth/` would return the database info.
    pub fn require_kid(&self) -> Result<&str, JwtError> {
        self.kid()
            .filter(|kid| !kid.is_empty())
            .ok_or(JwtError::MissingKid)
    }

    /// RSASSA-PKCS1-v1_5 with the digest for alg, over the exact received "header.payload" text.
    ///
    /// Fails with `UnsupportedAlg` before touching the key when `alg` is not acceptable.
    pub fn verify_signature(&self, key: &RsaPublicKey) -> Result<(), JwtError> {
        let input = self.signing_input.as_bytes();
        let verified = match self.alg()? {
            Alg::RS256 => verify_with::<Sha256>(key, input, &self.signature),
            Alg::RS384 => verify_with::<Sha384>(key, input, &self.signature),
            Alg::RS512 => verify_with::<Sha512>(key, input, &self.signature),
        };
        if verified {
            Ok(())
        } else {
            Err(JwtError::BadSignature)
        }
    }

    /// §1.7 step 6: exp absent → Ok; exp must be a JSON number strictly greater than now (exp == now is expired) → else Expired; non-number exp → BadExp.
    ///
    /// Kazoo compares Erlang numbers, so a fractional `exp` is compared as a number too.
    pub fn check_expiry(&self, now_unix: i64) -> Result<(), JwtError> {
        let exp = match self.claims.get("exp") {
            None => return Ok(()),
            Some(Value::Number(exp)) => exp,
            Some(_) => return Err(JwtError::BadExp),
        };
        let live = if let Some(exp) = exp.as_i64() {
            exp > now_unix
        } else if exp.as_u64().is_some() {
            // Above i64::MAX, hence after any `now_unix`.
            true
        } else {
            exp.as_f64().is_some_and(|exp| exp > now_unix as f64)
        };
        if live {
            Ok(())
        } else {
            Err(JwtError::Expired)
        }
    }
}

/// Signs like Kazoo: header {"alg":..,"typ":"JWT","kid":..} in that order, compact JSON, base64url no padding. Used by tests now and the login endpoints later.
///
/// # Panics
/// If `key` is too small for the digest (under 752 bits for RS512). `keys::private_key_from_pem`
/// refuses keys under 1024 bits, so keys loaded through it never panic here.
pub fn sign(claims: &Map<String, Value>, kid: &str, alg: Alg, key: &RsaPrivateKey) -> String {
    let mut header = Map::new();
    header.insert("alg".to_owned(), Value::from(alg.as_str()));
    header.insert("typ".to_owned(), Value::from("JWT"));
    header.insert("kid".to_owned(), Value::from(kid));
    sign_with_header(&header, claims, alg, key)
}

/// For tests of hostile headers: sign an arbitrary header object.
///
/// `alg` picks the digest; the header's own `alg` is written as given, so the two may disagree.
///
/// # Panics
/// As [`sign`].
pub fn sign_with_header(
    header: &Map<String, Value>,
    claims: &Map<String, Value>,
    alg: Alg,
    key: &RsaPrivateKey,
) -> String {
    let signing_input = format!("{}.{}", encode_json(header), encode_json(claims));
    let signature = rsa_sign(alg, key, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn encode_json(object: &Map<String, Value>) -> String {
    let json =
        serde_json::to_vec(object).expect("a JSON object with string keys always serialises");
    URL_SAFE_NO_PAD.encode(json)
}

fn rsa_sign(alg: Alg, key: &RsaPrivateKey, input: &[u8]) -> Vec<u8> {
    match alg {
        Alg::RS256 => sign_with::<Sha256>(key, input),
        Alg::RS384 => sign_with::<Sha384>(key, input),
        Alg::RS512 => sign_with::<Sha512>(key, input),
    }
}

fn sign_with<D: Digest + AssociatedOid>(key: &RsaPrivateKey, input: &[u8]) -> Vec<u8> {
    // With an RNG the rsa crate blinds the private-key operation against timing attacks.
    key.sign_with_rng(
        &mut rand::thread_rng(),
        Pkcs1v15Sign::new::<D>(),
        &D::digest(input),
    )
    .expect("RSA key too small for the digest; keys.rs refuses keys under 1024 bits")
}

fn verify_with<D: Digest + AssociatedOid>(
    key: &RsaPublicKey,
    input: &[u8],
    signature: &[u8],
) -> bool {
    key.verify(Pkcs1v15Sign::new::<D>(), &D::digest(input), signature)
        .is_ok()
}

fn decode_part(part: &str) -> Result<Vec<u8>, JwtError> {
    let standard: String = part
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    LENIENT_STANDARD
        .decode(standard)
        .map_err(|_| JwtError::Malformed)
}

fn decode_object(part: &str) -> Result<Map<String, Value>, JwtError> {
    match serde_json::from_slice(&decode_part(part)?) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(JwtError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    use proptest::prelude::*;
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use serde_json::json;
    use std::sync::OnceLock;

    const KID: &str = "9a09080973fa83df8e9b2e08f7682c47";
    const NOW: i64 = 1_795_750_279;

    fn kazoo_key() -> &'static RsaPrivateKey {
        static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
        KEY.get_or_init(|| {
            RsaPrivateKey::from_pkcs1_pem(include_str!("../../tests/fixtures/kazoo_e2049.pem"))
                .unwrap()
        })
    }

    fn other_key() -> &'static RsaPrivateKey {
        static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
        KEY.get_or_init(|| {
            RsaPrivateKey::from_pkcs1_pem(include_str!("../../tests/fixtures/other_e2049.pem"))
                .unwrap()
        })
    }

    fn kazoo_public() -> RsaPublicKey {
        kazoo_key().to_public_key()
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    /// The decoded `user_auth` payload of §1.3.
    fn user_auth_claims() -> Map<String, Value> {
        object(json!({
            "iss": "kazoo",
            "identity_sig": "4K58MoGYRKjE2k1a-gIKsGraZIcxDb0ZpwhFd_Qgelk",
            "account_id": "b1b7cfe1fc65fd2f70512844d609650b",
            "owner_id": "1a98b4af7f12177f02911ca8e29ad714",
            "method": "cb_user_auth",
            "exp": 1795753879
        }))
    }

    fn claims_with_exp(exp: Option<Value>) -> Map<String, Value> {
        let mut claims = user_auth_claims();
        claims.remove("exp");
        if let Some(exp) = exp {
            claims.insert("exp".to_owned(), exp);
        }
        claims
    }

    fn parts(token: &str) -> Vec<&str> {
        token.split('.').collect()
    }

    fn b64_json(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
    }

    /// A token over a hand-made signing input, to test spellings `sign` never produces.
    fn token_over(signing_input: &str, alg: Alg, key: &RsaPrivateKey) -> String {
        let signature = rsa_sign(alg, key, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    #[test]
    fn sign_then_verify_round_trips_for_every_alg_with_the_e2049_key() {
        for alg in [Alg::RS256, Alg::RS384, Alg::RS512] {
            let token = sign(&user_auth_claims(), KID, alg, kazoo_key());
            let jwt = Jwt::parse(&token).unwrap();
            assert_eq!(jwt.alg(), Ok(alg));
            assert_eq!(jwt.kid(), Some(KID));
            assert_eq!(jwt.require_kid(), Ok(KID));
            assert_eq!(jwt.claims(), &user_auth_claims());
            assert_eq!(jwt.verify_signature(&kazoo_public()), Ok(()));
        }
    }

    #[test]
    fn sign_writes_kazoos_header_in_kazoos_order() {
        let token = sign(&user_auth_claims(), KID, Alg::RS256, kazoo_key());
        let header = URL_SAFE_NO_PAD.decode(parts(&token)[0]).unwrap();
        assert_eq!(
            String::from_utf8(header).unwrap(),
            format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{KID}"}}"#)
        );
    }

    #[test]
    fn sign_writes_compact_unpadded_base64url() {
        let token = sign(&user_auth_claims(), KID, Alg::RS256, kazoo_key());
        assert!(!token.contains(['=', '+', '/']));
        let payload = URL_SAFE_NO_PAD.decode(parts(&token)[1]).unwrap();
        assert!(!payload.contains(&b' '));
        // §1.1: the [exec] sample of this payload with a 32-hex kid was 717 characters.
        assert_eq!(token.len(), 717);
    }

    #[test]
    fn a_token_re_signed_with_another_key_fails_with_bad_signature() {
        let token = sign(&user_auth_claims(), KID, Alg::RS256, other_key());
        let jwt = Jwt::parse(&token).unwrap();
        assert_eq!(jwt.kid(), Some(KID));
        assert_eq!(
            jwt.verify_signature(&kazoo_public()),
            Err(JwtError::BadSignature)
        );
    }

    #[test]
    fn a_tampered_payload_fails_with_bad_signature() {
        let token = sign(&user_auth_claims(), KID, Alg::RS256, kazoo_key());
        let mut claims = user_auth_claims();
        claims.insert(
            "account_id".to_owned(),
            json!("00000000000000000000000000000000"),
        );
        let p = parts(&token);
        let tampered = format!("{}.{}.{}", p[0], b64_json(&Value::Object(claims)), p[2]);
        let jwt = Jwt::parse(&tampered).unwrap();
        assert_eq!(
            jwt.verify_signature(&kazoo_public()),
            Err(JwtError::BadSignature)
        );
    }

    #[test]
    fn a_tampered_signature_fails_with_bad_signature() {
        let token = sign(&user_auth_claims(), KID, Alg::RS256, kazoo_key());
        let p = parts(&token);
        let mut signature = URL_SAFE_NO_PAD.decode(p[2]).unwrap();
        signature[100] ^= 1;
        let tampered = format!("{}.{}.{}", p[0], p[1], URL_SAFE_NO_PAD.encode(&signature));
        assert_eq!(
            Jwt::parse(&tampered)
                .unwrap()
                .verify_signature(&kazoo_public()),
            Err(JwtError::BadSignature)
        );
        let truncated = format!(
            "{}.{}.{}",
            p[0],
            p[1],
            URL_SAFE_NO_PAD.encode(&signature[1..])
        );
        assert_eq!(
            Jwt::parse(&truncated)
                .unwrap()
                .verify_signature(&kazoo_public()),
            Err(JwtError::BadSignature)
        );
    }

    #[test]
    fn a_signature_made_with_another_digest_than_alg_fails() {
        let header = object(json!({"alg": "RS512", "typ": "JWT", "kid": KID}));
        let token = sign_with_header(&header, &user_auth_claims(), Alg::RS256, kazoo_key());
        assert_eq!(
            Jwt::parse(&token)
                .unwrap()
                .verify_signature(&kazoo_public()),
            Err(JwtError::BadSignature)
        );
    }

    #[test]
    fn a_re_encoded_header_fails_because_the_signature_covers_the_received_text() {
        let token = sign(&user_auth_claims(), KID, Alg::RS256, kazoo_key());
        let p = parts(&token);
        let reordered = b64_json(&json!({"kid": KID, "typ": "JWT", "alg": "RS256"}));
        let jwt = Jwt::parse(&format!("{reordered}.{}.{}", p[1], p[2])).unwrap();
        assert_eq!(jwt.alg(), Ok(Alg::RS256));
        assert_eq!(
            jwt.verify_signature(&kazoo_public()),
            Err(JwtError::BadSignature)
        );
    }

    #[test]
    fn alg_none_with_an_empty_signature_is_unsupported() {
        let header = b64_json(&json!({"alg": "none", "typ": "JWT", "kid": KID}));
        let payload = b64_json(&Value::Object(user_auth_claims()));
        let jwt = Jwt::parse(&format!("{header}.{payload}.")).unwrap();
        assert_eq!(jwt.alg(), Err(JwtError::UnsupportedAlg));
        assert_eq!(
            jwt.verify_signature(&kazoo_public()),
            Err(JwtError::UnsupportedAlg)
        );
    }

    #[test]
    fn hs256_keyed_by_the_public_pem_is_unsupported() {
        use hmac::{Hmac, Mac};
        let public_pem = rsa::pkcs1::EncodeRsaPublicKey::to_pkcs1_pem(
            &kazoo_public(),
            rsa::pkcs1::LineEnding::LF,
        )
        .unwrap();
        let header = b64_json(&json!({"alg": "HS256", "typ": "JWT", "kid": KID}));
        let payload = b64_json(&Value::Object(user_auth_claims()));
        let input = format!("{header}.{payload}");
        let mut mac = Hmac::<Sha256>::new_from_slice(public_pem.as_bytes()).unwrap();
        mac.update(input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let jwt = Jwt::parse(&format!("{input}.{signature}")).unwrap();
        assert_eq!(jwt.alg(), Err(JwtError::UnsupportedAlg));
        assert_eq!(
            jwt.verify_signature(&kazoo_public()),
            Err(JwtError::UnsupportedAlg)
        );
    }

    #[test]
    fn alg_must_be_an_exact_rs_name() {
        for alg in [
            json!("rs256"),
            json!("RS256 "),
            json!("PS256"),
            json!("ES256"),
            json!(""),
            json!(null),
            json!(256),
        ] {
            let header = object(json!({"alg": alg, "typ": "JWT", "kid": KID}));
            let token = sign_with_header(&header, &user_auth_claims(), Alg::RS256, kazoo_key());
            let jwt = Jwt::parse(&token).unwrap();
            assert_eq!(jwt.alg(), Err(JwtError::UnsupportedAlg), "alg {alg}");
            assert_eq!(
                jwt.verify_signature(&kazoo_public()),
                Err(JwtError::UnsupportedAlg)
            );
        }
    }

    #[test]
    fn a_header_without_alg_is_unsupported() {
        for header in [json!({"typ": "JWT", "kid": KID}), json!({})] {
            let token = sign_with_header(
                &object(header),
                &user_auth_claims(),
                Alg::RS256,
                kazoo_key(),
            );
            assert_eq!(
                Jwt::parse(&token).unwrap().alg(),
                Err(JwtError::UnsupportedAlg)
            );
        }
    }

    #[test]
    fn typ_jws_or_no_typ_parses_and_verifies() {
        for header in [
            json!({"alg": "RS256", "typ": "JWS", "kid": KID}),
            json!({"alg": "RS256", "kid": KID}),
            json!({"kid": KID, "alg": "RS512", "typ": 42}),
        ] {
            let alg = Alg::from_header_value(header["alg"].as_str().unwrap()).unwrap();
            let token = sign_with_header(&object(header), &user_auth_claims(), alg, kazoo_key());
            let jwt = Jwt::parse(&token).unwrap();
            assert_eq!(jwt.kid(), Some(KID));
            assert_eq!(jwt.verify_signature(&kazoo_public()), Ok(()));
        }
    }

    #[test]
    fn a_header_without_kid_has_no_kid() {
        let header = object(json!({"alg": "RS256", "typ": "JWT"}));
        let token = sign_with_header(&header, &user_auth_claims(), Alg::RS256, kazoo_key());
        let jwt = Jwt::parse(&token).unwrap();
        assert_eq!(jwt.kid(), None);
        assert_eq!(jwt.require_kid(), Err(JwtError::MissingKid));
    }

    #[test]
    fn a_non_string_or_empty_kid_is_missing() {
        for kid in [json!(42), json!(null), json!([KID]), json!("")] {
            let header = object(json!({"alg": "RS256", "typ": "JWT", "kid": kid}));
            let token = sign_with_header(&header, &user_auth_claims(), Alg::RS256, kazoo_key());
            let jwt = Jwt::parse(&token).unwrap();
            assert_eq!(jwt.require_kid(), Err(JwtError::MissingKid), "kid {kid}");
        }
    }

    #[test]
    fn wrong_part_counts_are_malformed() {
        let token = sign(&user_auth_claims(), KID, Alg::RS256, kazoo_key());
        let p = parts(&token);
        for bad in [
            String::new(),
            "garbage".to_owned(),
            ".".to_owned(),
            "..".to_owned(),
            "...".to_owned(),
            format!("{}.{}", p[0], p[1]),
            format!("{token}.{}", p[2]),
            format!("{token}."),
        ] {
            assert_eq!(Jwt::parse(&bad).err(), Some(JwtError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn a_payload_that_is_not_json_is_malformed() {
        let token = sign(&user_auth_claims(), KID, Alg::RS256, kazoo_key());
        let p = parts(&token);
        for payload in [
            URL_SAFE_NO_PAD.encode(b"not json"),
            URL_SAFE_NO_PAD.encode(br#"{"iss":"kazoo""#),
            URL_SAFE_NO_PAD.encode(b"{\"iss\":\"\xff\"}"),
            URL_SAFE_NO_PAD.encode(b""),
            String::new(),
        ] {
            let bad = format!("{}.{payload}.{}", p[0], p[2]);
            assert_eq!(
                Jwt::parse(&bad).err(),
                Some(JwtError::Malformed),
                "{payload}"
            );
        }
    }

    #[test]
    fn a_payload_or_header_that_is_not_an_object_is_malformed() {
        let token = sign(&user_auth_claims(), KID, Alg::RS256, kazoo_key());
        let p = parts(&token);
        for value in [
            json!([1, 2]),
            json!("kazoo"),
            json!(42),
            json!(null),
            json!(true),
        ] {
            let not_object = b64_json(&value);
            let bad_payload = format!("{}.{not_object}.{}", p[0], p[2]);
            let bad_header = format!("{not_object}.{}.{}", p[1], p[2]);
            assert_eq!(Jwt::parse(&bad_payload).err(), Some(JwtError::Malformed));
            assert_eq!(Jwt::parse(&bad_header).err(), Some(JwtError::Malformed));
        }
    }

    #[test]
    fn invalid_base64_in_any_part_is_malformed() {
        let token = sign(&user_auth_claims(), KID, Alg::RS256, kazoo_key());
        let p = parts(&token);
        for bad in [
            format!("{}!.{}.{}", p[0], p[1], p[2]),
            format!("{}.{} .{}", p[0], p[1], p[2]),
            format!("{}.{}.{}*", p[0], p[1], p[2]),
            // 342 + 3 characters leaves one lone character, which cannot be a base64 quantum.
            format!("{}.{}.{}AAA", p[0], p[1], p[2]),
            format!("{}.{}.=={}", p[0], p[1], p[2]),
        ] {
            assert_eq!(Jwt::parse(&bad).err(), Some(JwtError::Malformed), "{bad}");
        }
    }

    #[test]
    fn padded_and_standard_alphabet_parts_are_accepted() {
        let header_json =
            serde_json::to_vec(&json!({"alg":"RS256","typ":"JWT","kid":KID})).unwrap();
        // Claims chosen so that the base64 holds '-' and '_' and needs padding.
        let mut claims = user_auth_claims();
        claims.insert("note".to_owned(), json!("\u{fb}\u{ff}\u{fe}?>"));
        let payload_json = serde_json::to_vec(&claims).unwrap();
        let standard_padded = format!(
            "{}.{}",
            STANDARD.encode(&header_json),
            STANDARD.encode(&payload_json)
        );
        let url_padded = format!(
            "{}.{}",
            URL_SAFE.encode(&header_json),
            URL_SAFE.encode(&payload_json)
        );
        assert!(standard_padded.contains(['+', '/']) && standard_padded.contains('='));
        for input in [standard_padded, url_padded] {
            let token = token_over(&input, Alg::RS256, kazoo_key());
            let jwt = Jwt::parse(&token).unwrap();
            assert_eq!(jwt.claims(), &claims);
            assert_eq!(jwt.kid(), Some(KID));
            assert_eq!(jwt.verify_signature(&kazoo_public()), Ok(()));
        }
    }

    #[test]
    fn a_respelled_signature_part_still_verifies() {
        let token = sign(&user_auth_claims(), KID, Alg::RS256, kazoo_key());
        let p = parts(&token);
        let signature = URL_SAFE_NO_PAD.decode(p[2]).unwrap();
        for spelling in [STANDARD.encode(&signature), URL_SAFE.encode(&signature)] {
            let respelled = format!("{}.{}.{spelling}", p[0], p[1]);
            assert_eq!(
                Jwt::parse(&respelled)
                    .unwrap()
                    .verify_signature(&kazoo_public()),
                Ok(())
            );
        }
    }

    fn expiry(exp: Option<Value>, now: i64) -> Result<(), JwtError> {
        let token = sign(&claims_with_exp(exp), KID, Alg::RS256, kazoo_key());
        Jwt::parse(&token).unwrap().check_expiry(now)
    }

    #[test]
    fn exp_equal_to_now_is_expired() {
        assert_eq!(expiry(Some(json!(NOW)), NOW), Err(JwtError::Expired));
    }

    #[test]
    fn exp_in_the_past_is_expired() {
        assert_eq!(expiry(Some(json!(NOW - 10)), NOW), Err(JwtError::Expired));
        assert_eq!(expiry(Some(json!(-1)), NOW), Err(JwtError::Expired));
    }

    #[test]
    fn exp_in_the_future_is_ok() {
        assert_eq!(expiry(Some(json!(NOW + 10)), NOW), Ok(()));
        assert_eq!(expiry(Some(json!(NOW + 1)), NOW), Ok(()));
    }

    #[test]
    fn a_missing_exp_never_expires() {
        assert_eq!(expiry(None, NOW), Ok(()));
        assert_eq!(expiry(None, i64::MAX), Ok(()));
    }

    #[test]
    fn a_non_numeric_exp_is_bad() {
        for exp in [
            json!("9999999999"),
            json!(null),
            json!(true),
            json!([NOW + 10]),
            json!({}),
        ] {
            assert_eq!(
                expiry(Some(exp.clone()), NOW),
                Err(JwtError::BadExp),
                "exp {exp}"
            );
        }
    }

    #[test]
    fn fractional_and_huge_exp_compare_as_numbers() {
        assert_eq!(expiry(Some(json!(NOW as f64 + 0.5)), NOW), Ok(()));
        assert_eq!(
            expiry(Some(json!(NOW as f64 - 0.5)), NOW),
            Err(JwtError::Expired)
        );
        assert_eq!(expiry(Some(json!(NOW as f64)), NOW), Err(JwtError::Expired));
        assert_eq!(expiry(Some(json!(u64::MAX)), NOW), Ok(()));
        assert_eq!(expiry(Some(json!(1e300)), NOW), Ok(()));
        assert_eq!(expiry(Some(json!(-1e300)), NOW), Err(JwtError::Expired));
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_arbitrary_strings(token in "\\PC*") {
            let _ = Jwt::parse(&token);
        }

        #[test]
        fn parse_never_panics_on_base64ish_strings(token in "[A-Za-z0-9_=+/.-]{0,300}") {
            if let Ok(jwt) = Jwt::parse(&token) {
                let _ = jwt.alg();
                let _ = jwt.kid();
                let _ = jwt.check_expiry(NOW);
            }
        }

        #[test]
        fn parse_never_panics_on_three_encoded_parts(
            header in proptest::collection::vec(any::<u8>(), 0..64),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            signature in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let token = format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                STANDARD.encode(payload),
                URL_SAFE.encode(signature)
            );
            if let Ok(jwt) = Jwt::parse(&token) {
                prop_assert!(jwt.verify_signature(&kazoo_public()).is_err());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn any_string_claims_round_trip_through_sign_and_parse(
            claims in proptest::collection::btree_map("\\PC{0,12}", "\\PC{0,24}", 0..6)
        ) {
            let claims: Map<String, Value> =
                claims.into_iter().map(|(k, v)| (k, Value::from(v))).collect();
            let token = sign(&claims, KID, Alg::RS256, kazoo_key());
            let jwt = Jwt::parse(&token).unwrap();
            prop_assert_eq!(jwt.claims(), &claims);
            prop_assert_eq!(jwt.verify_signature(&kazoo_public()), Ok(()));
        }
    }
}
