//! Signature suites behind one interface (interchange-v1 §4): Ed25519 (ring, the default) and
//! SM2 with SM3 (GM/T 0003 / 0004, RustCrypto) for 国密 deployments. Which suite a key uses
//! is part of the key; everything above this module is suite-agnostic.

use std::fmt;
use std::str::FromStr;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use sm2::dsa::signature::{Signer, Verifier};

/// GM/T 0009 default signer identity, used unless the registry names another.
pub const SM2_DEFAULT_ID: &str = "1234567812345678";

/// A signature algorithm, as written in JWS headers and the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// Ed25519 (RFC 8037). Public key 32 bytes, signature 64 bytes.
    EdDsa,
    /// SM2 signature with SM3. Public key 65-byte uncompressed point, signature `r ‖ s`.
    Sm2Sm3,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDsa => "EdDSA",
            Self::Sm2Sm3 => "SM2SM3",
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Alg {
    type Err = SignatureError;
    fn from_str(s: &str) -> Result<Self, SignatureError> {
        match s {
            "EdDSA" => Ok(Self::EdDsa),
            "SM2SM3" => Ok(Self::Sm2Sm3),
            other => Err(SignatureError::UnknownAlg(other.to_owned())),
        }
    }
}

/// Why a key could not be used or a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("unknown signature algorithm {0:?}")]
    UnknownAlg(String),
    #[error("malformed {alg} key")]
    BadKey { alg: Alg },
    #[error("signature does not verify")]
    Invalid,
}

/// A private signing key of either suite.
pub enum SigningKey {
    Ed25519(Ed25519KeyPair),
    Sm2(Box<sm2::dsa::SigningKey>),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        write!(f, "SigningKey({})", self.alg())
    }
}

impl SigningKey {
    /// A key from 32 secret bytes: the Ed25519 seed, or the SM2 private scalar (with the
    /// default signer identity). Randomness comes from the caller: the core has none.
    pub fn from_secret(alg: Alg, secret: &[u8; 32]) -> Result<Self, SignatureError> {
        match alg {
            Alg::EdDsa => Ed25519KeyPair::from_seed_unchecked(secret)
                .map(Self::Ed25519)
                .map_err(|_| SignatureError::BadKey { alg }),
            Alg::Sm2Sm3 => sm2::dsa::SigningKey::from_slice(SM2_DEFAULT_ID, secret)
                .map(|k| Self::Sm2(Box::new(k)))
                .map_err(|_| SignatureError::BadKey { alg }),
        }
    }

    pub fn alg(&self) -> Alg {
        match self {
            Self::Ed25519(_) => Alg::EdDsa,
            Self::Sm2(_) => Alg::Sm2Sm3,
        }
    }

    pub fn public_key(&self) -> PublicKey {
        let bytes = match self {
            Self::Ed25519(k) => k.public_key().as_ref().to_vec(),
            Self::Sm2(k) => k.verifying_key().to_sec1_bytes().to_vec(),
        };
        PublicKey { alg: self.alg(), bytes, sm2_id: None }
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            Self::Ed25519(k) => k.sign(message).as_ref().to_vec(),
            Self::Sm2(k) => {
                let sig: sm2::dsa::Signature = k.sign(message);
                sig.to_bytes().to_vec()
            }
        }
    }
}

/// A public key of either suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub alg: Alg,
    pub bytes: Vec<u8>,
    /// SM2 signer identity when the registry states one other than the default.
    pub sm2_id: Option<String>,
}

impl PublicKey {
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        match self.alg {
            Alg::EdDsa => {
                if self.bytes.len() != 32 {
                    return Err(SignatureError::BadKey { alg: self.alg });
                }
                UnparsedPublicKey::new(&ED25519, &self.bytes)
                    .verify(message, signature)
                    .map_err(|_| SignatureError::Invalid)
            }
            Alg::Sm2Sm3 => {
                let id = self.sm2_id.as_deref().unwrap_or(SM2_DEFAULT_ID);
                let key = sm2::dsa::VerifyingKey::from_sec1_bytes(id, &self.bytes)
                    .map_err(|_| SignatureError::BadKey { alg: self.alg })?;
                let sig = sm2::dsa::Signature::from_slice(signature).map_err(|_| SignatureError::Invalid)?;
                key.verify(message, &sig).map_err(|_| SignatureError::Invalid)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).expect("hex")
    }

    /// RFC 8032 §7.1 TEST 1–3.
    #[test]
    fn rfc8032_ed25519_vectors() {
        let vectors = [
            (
                "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
                "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
                "",
                "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
            ),
            (
                "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
                "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
                "72",
                "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
            ),
            (
                "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
                "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
                "af82",
                "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
            ),
        ];
        for (secret, public, message, signature) in vectors {
            let secret: [u8; 32] = unhex(secret).try_into().expect("32 bytes");
            let key = SigningKey::from_secret(Alg::EdDsa, &secret).expect("key");
            assert_eq!(key.public_key().bytes, unhex(public));
            assert_eq!(key.sign(&unhex(message)), unhex(signature));
            let pk = PublicKey { alg: Alg::EdDsa, bytes: unhex(public), sm2_id: None };
            assert_eq!(pk.verify(&unhex(message), &unhex(signature)), Ok(()));
        }
    }
}
