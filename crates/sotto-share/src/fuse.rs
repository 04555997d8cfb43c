//! Fusion at one provider: the chunks addressed to it, from every provider
//! of the declaration, added per customer tag into its share of the joint
//! table. Nothing is fused until every provider's fragment is complete; a
//! missing one is named.

use std::collections::BTreeMap;

use crate::dataset::Declaration;
use crate::fragment::OpenedChunk;

/// Why fusion could not go on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FuseError {
    /// A chunk was added twice.
    #[error("chunk {index} from {sender} was received twice")]
    Duplicate {
        /// The sender.
        sender: String,
        /// The chunk.
        index: u32,
    },
    /// Chunks of one sender disagree on the fragment's chunk count.
    #[error("chunks from {sender} disagree on the fragment's size ({first} and {then} chunks)")]
    CountChanged {
        /// The sender.
        sender: String,
        /// The count first seen.
        first: u32,
        /// The count now.
        then: u32,
    },
    /// A sender's rows repeat a tag or are out of tag order.
    #[error("the fragment from {0} repeats a customer or is out of order")]
    RepeatedRow(String),
    /// Some providers' fragments are not (all) there.
    #[error("no fusion: fragments missing from {}", .0.join(", "))]
    Missing(Vec<String>),
}

#[derive(Default)]
struct Received {
    count: u32,
    chunks: BTreeMap<u32, OpenedChunk>,
}

/// Collects the chunks addressed to one provider.
pub struct Fuser<'a> {
    declaration: &'a Declaration,
    received: BTreeMap<usize, Received>,
}

impl<'a> Fuser<'a> {
    /// An empty fusion for `declaration`.
    pub fn new(declaration: &'a Declaration) -> Self {
        Self {
            declaration,
            received: BTreeMap::new(),
        }
    }

    fn name(&self, sender: usize) -> String {
        self.declaration
            .providers
            .get(sender)
            .map_or_else(String::new, |p| p.name.clone())
    }

    /// Adds an opened chunk.
    pub fn add(&mut self, chunk: OpenedChunk) -> Result<(), FuseError> {
        let sender = self.name(chunk.sender);
        let received = self.received.entry(chunk.sender).or_default();
        if received.chunks.is_empty() {
            received.count = chunk.count;
        } else if received.count != chunk.count {
            return Err(FuseError::CountChanged {
                sender,
                first: received.count,
                then: chunk.count,
            });
        }
        if received.chunks.contains_key(&chunk.index) {
            return Err(FuseError::Duplicate {
                sender,
                index: chunk.index,
            });
        }
        received.chunks.insert(chunk.index, chunk);
        Ok(())
    }

    /// The providers whose fragment is not complete, with what is there.
    pub fn missing(&self) -> Vec<String> {
        (0..self.declaration.providers.len())
            .filter_map(|i| match self.received.get(&i) {
                None => Some(format!("{} (nothing received)", self.name(i))),
                Some(r) if r.chunks.len() < r.count as usize => Some(format!(
                    "{} ({} of {} chunks)",
                    self.name(i),
                    r.chunks.len(),
                    r.count
                )),
                Some(_) => None,
            })
            .collect()
    }

    /// Fuses, once every provider's fragment is complete.
    pub fn finish(self) -> Result<FusedShare, FuseError> {
        let missing = self.missing();
        if !missing.is_empty() {
            return Err(FuseError::Missing(missing));
        }
        let width = self.declaration.width();
        // Each sender's rows in tag order (split sorts them, chunks keep
        // the order); a k-way merge adds them into tag-ordered rows.
        let mut senders = Vec::with_capacity(self.received.len());
        for (&sender, received) in &self.received {
            let Some((offset, _)) = self.declaration.slot(sender) else {
                continue;
            };
            let rows: Vec<(&[u8; 32], &[u64])> = received
                .chunks
                .values()
                .flat_map(|chunk| (0..chunk.rows.len()).filter_map(|i| chunk.rows.row(i)))
                .collect();
            if rows.windows(2).any(|w| w[0].0 >= w[1].0) {
                return Err(FuseError::RepeatedRow(self.name(sender)));
            }
            senders.push((offset, rows));
        }
        let mut next = vec![0usize; senders.len()];
        let mut tags = Vec::new();
        let mut values = Vec::new();
        loop {
            let lowest = senders
                .iter()
                .zip(&next)
                .filter_map(|((_, rows), &at)| rows.get(at).map(|r| r.0))
                .min()
                .copied();
            let Some(tag) = lowest else {
                break;
            };
            let start = values.len();
            values.resize(start + width, 0u64);
            let row = &mut values[start..];
            for ((offset, rows), at) in senders.iter().zip(next.iter_mut()) {
                if let Some((_, share)) = rows.get(*at).filter(|r| *r.0 == tag) {
                    for (slot, v) in row[*offset..offset + share.len()].iter_mut().zip(*share) {
                        *slot = slot.wrapping_add(*v);
                    }
                    *at += 1;
                }
            }
            tags.push(tag);
        }
        Ok(FusedShare {
            declaration: self.declaration.digest(),
            width,
            tags,
            values,
        })
    }
}

/// One provider's additive share of the joint table: for every customer any
/// provider has, a row of the declaration's width, in tag order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FusedShare {
    /// The declaration's digest.
    pub declaration: [u8; 32],
    /// Values per row.
    pub width: usize,
    tags: Vec<[u8; 32]>,
    values: Vec<u64>,
}

impl FusedShare {
    /// The tags and row-major values, for storing.
    pub fn parts(&self) -> (&[[u8; 32]], &[u64]) {
        (&self.tags, &self.values)
    }

    /// A share from stored parts; none unless the tags are in strictly
    /// increasing order and the values fill the rows.
    pub fn from_parts(
        declaration: [u8; 32],
        width: usize,
        tags: Vec<[u8; 32]>,
        values: Vec<u64>,
    ) -> Option<Self> {
        let ordered = tags.windows(2).all(|w| w[0] < w[1]);
        (ordered && values.len() == tags.len() * width).then_some(Self {
            declaration,
            width,
            tags,
            values,
        })
    }

    /// The share of customer `tag`'s row, if any provider has the customer.
    pub fn row(&self, tag: &[u8; 32]) -> Option<&[u64]> {
        let row = self.tags.binary_search(tag).ok()?;
        self.values.get(row * self.width..(row + 1) * self.width)
    }

    /// Number of customers.
    pub fn len(&self) -> usize {
        self.tags.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// Every row: tag and share.
    pub fn rows(&self) -> impl Iterator<Item = (&[u8; 32], &[u64])> + '_ {
        self.tags
            .iter()
            .zip(self.values.chunks_exact(self.width.max(1)))
    }

    /// `weights · row` in Z_2^64 (a linear model's partial result on this
    /// share), if the customer is known; `weights` has the row's width.
    pub fn dot(&self, tag: &[u8; 32], weights: &[u64]) -> Option<u64> {
        let row = self.row(tag)?;
        (weights.len() == row.len()).then(|| {
            row.iter()
                .zip(weights)
                .fold(0u64, |acc, (x, w)| acc.wrapping_add(x.wrapping_mul(*w)))
        })
    }
}
