//! Finding the intersection from doubly-encrypted elements, and the secret
//! shuffles that hide which identifier sits at which stream position.

use rand::seq::SliceRandom;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use sotto_crypto::group::Element;
use sotto_crypto::secret::SecretBytes;

/// Bytes of an encoded point kept for comparison. With n·m pairs compared,
/// the chance of any false match is at most n·m / 2^128 (about 2^-88 for
/// 10^6 × 10^6).
pub const TRUNCATED_LEN: usize = 16;

/// A truncated doubly-encrypted element.
pub type Truncated = [u8; TRUNCATED_LEN];

fn truncate(element: &Element) -> Truncated {
    let mut t = [0u8; TRUNCATED_LEN];
    t.copy_from_slice(&element[..TRUNCATED_LEN]);
    t
}

/// Collects an ordered probe stream and an unordered reference set, then
/// tells which probe positions occur in the set.
///
/// The requester probes with w (its own ids, doubly encrypted, in its shuffled
/// order) against z; the provider probes with z (its ids, in its shuffled
/// order) against w.
#[derive(Default)]
pub struct Matcher {
    probe: Vec<Truncated>,
    reference: Vec<Truncated>,
}

impl Matcher {
    /// An empty matcher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the next elements of the ordered probe stream.
    pub fn add_probe(&mut self, elements: &[Element]) {
        self.probe.extend(elements.iter().map(truncate));
    }

    /// Adds elements to the reference set.
    pub fn add_reference(&mut self, elements: &[Element]) {
        self.reference.extend(elements.iter().map(truncate));
    }

    /// Adds already truncated elements to the reference set.
    pub fn add_reference_truncated(&mut self, elements: &[Truncated]) {
        self.reference.extend_from_slice(elements);
    }

    /// The truncated probe elements (kept by the provider between steps).
    pub fn probe(&self) -> &[Truncated] {
        &self.probe
    }

    /// Probe positions whose element is in the reference set, ascending.
    pub fn matched_positions(mut self) -> Vec<u64> {
        self.reference.par_sort_unstable();
        let reference = &self.reference;
        self.probe
            .par_iter()
            .enumerate()
            .filter(|(_, t)| reference.binary_search(t).is_ok())
            .map(|(i, _)| i as u64)
            .collect()
    }
}

/// The secret order in which a party sends its identifiers: position `p` of
/// its stream carries identifier `order[p]`.
pub fn shuffle_order(seed: &SecretBytes<32>, n: usize) -> Vec<u32> {
    let mut rng = ChaCha20Rng::from_seed(*seed.expose());
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(&mut rng);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_permutation_fixed_by_the_seed() {
        let seed = SecretBytes::new([3; 32]);
        let order = shuffle_order(&seed, 1000);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<u32>>());
        assert_eq!(order, shuffle_order(&seed, 1000));
        assert_ne!(order, shuffle_order(&SecretBytes::new([4; 32]), 1000));
    }

    #[test]
    fn matcher_finds_common_elements_in_probe_order() {
        let e = |b: u8| [b; 32];
        let mut m = Matcher::new();
        m.add_probe(&[e(1), e(2), e(3), e(4)]);
        m.add_reference(&[e(4), e(9), e(2)]);
        assert_eq!(m.matched_positions(), vec![1, 3]);
    }
}
