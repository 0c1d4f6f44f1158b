//! Test-only key pairs from `tests/fixtures/auth/` (committed, so no test
//! waits on RSA key generation).

/// (private PKCS#8 PEM, public SPKI PEM)
pub(crate) fn rsa_a() -> (&'static str, &'static str) {
    (
        include_str!("../../tests/fixtures/auth/rsa_a.key.pem"),
        include_str!("../../tests/fixtures/auth/rsa_a.pub.pem"),
    )
}

/// A second RSA pair, for rotation and wrong-key cases.
pub(crate) fn rsa_b() -> (&'static str, &'static str) {
    (
        include_str!("../../tests/fixtures/auth/rsa_b.key.pem"),
        include_str!("../../tests/fixtures/auth/rsa_b.pub.pem"),
    )
}

/// A third RSA pair.
pub(crate) fn rsa_c() -> (&'static str, &'static str) {
    (
        include_str!("../../tests/fixtures/auth/rsa_c.key.pem"),
        include_str!("../../tests/fixtures/auth/rsa_c.pub.pem"),
    )
}

/// P-256 pair.
pub(crate) fn ec_p256() -> (&'static str, &'static str) {
    (
        include_str!("../../tests/fixtures/auth/ec_p256.key.pem"),
        include_str!("../../tests/fixtures/auth/ec_p256.pub.pem"),
    )
}

/// Ed25519 pair.
pub(crate) fn ed25519() -> (&'static str, &'static str) {
    (
        include_str!("../../tests/fixtures/auth/ed25519.key.pem"),
        include_str!("../../tests/fixtures/auth/ed25519.pub.pem"),
    )
}

/// P-384 pair.
pub(crate) fn ec_p384() -> (&'static str, &'static str) {
    (
        include_str!("../../tests/fixtures/auth/ec_p384.key.pem"),
        include_str!("../../tests/fixtures/auth/ec_p384.pub.pem"),
    )
}
