//! Seeded identifiers: version-4 uuids drawn from the simulator's ChaCha streams.

use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use uuid::Uuid;

/// A random (version 4, RFC 4122 variant) uuid drawn from `rng`.
pub(crate) fn random_uuid(rng: &mut ChaCha8Rng) -> Uuid {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}
