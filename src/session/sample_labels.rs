//! Per-sample metadata stored compactly: the step label of each sample as runs of arithmetic
//! progressions, and the few samples produced by dense output as a sorted index list. A
//! fixed-step run records labels 0, k, 2k, ... (one run) and no interpolated sample, so a
//! sample costs its time and values only.

/// Labels `first, first + stride, ...` of samples `start .. start + len` (wrapping
/// arithmetic, so a repeated or falling label is just another stride).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progression {
    start: usize,
    first: u64,
    stride: u64,
    len: usize,
}

impl Progression {
    fn at(&self, offset: usize) -> u64 {
        self.first
            .wrapping_add(self.stride.wrapping_mul(offset as u64))
    }

    fn next(&self) -> u64 {
        self.at(self.len)
    }

    /// Whether `label` continues this progression.
    fn continues(&self, label: u64) -> bool {
        self.len == 1 || self.next() == label
    }
}

/// The step label of every sample.
#[derive(Debug, Clone, Default)]
pub struct StepLabels {
    runs: Vec<Progression>,
    len: usize,
}

/// Equal when the label sequences are (the same sequence can be split into progressions
/// differently, e.g. after a rollback).
impl PartialEq for StepLabels {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for StepLabels {}

impl StepLabels {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, label: u64) {
        self.extend_progression(label, 0, 1);
    }

    /// Appends `n` labels `first, first + stride, ...`.
    pub fn extend_progression(&mut self, first: u64, stride: u64, n: usize) {
        if n == 0 {
            return;
        }
        let start = self.len;
        self.len += n;
        if let Some(last) = self.runs.last_mut() {
            if last.continues(first) && (n == 1 || last.len == 1 || last.stride == stride) {
                // A one-label run takes its stride from the label that follows it.
                if last.len == 1 {
                    last.stride = first.wrapping_sub(last.first);
                }
                if n == 1 || last.stride == stride {
                    last.len += n;
                    return;
                }
                last.len += 1;
                self.runs.push(Progression {
                    start: start + 1,
                    first: first.wrapping_add(stride),
                    stride,
                    len: n - 1,
                });
                return;
            }
        }
        self.runs.push(Progression {
            start,
            first,
            stride,
            len: n,
        });
    }

    /// The label of sample `i`; panics when `i >= len()`, like slice indexing.
    pub fn get(&self, i: usize) -> u64 {
        assert!(i < self.len, "sample {i} of {}", self.len);
        let r = self.runs.partition_point(|r| r.start <= i) - 1;
        let run = &self.runs[r];
        run.at(i - run.start)
    }

    pub fn last(&self) -> Option<u64> {
        self.runs.last().map(|r| r.at(r.len - 1))
    }

    pub fn truncate(&mut self, n: usize) {
        if n >= self.len {
            return;
        }
        self.len = n;
        while let Some(last) = self.runs.last_mut() {
            if last.start >= n {
                self.runs.pop();
            } else {
                last.len = n - last.start;
                break;
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.runs
            .iter()
            .flat_map(|r| (0..r.len).map(move |offset| r.at(offset)))
    }

    pub fn to_vec(&self) -> Vec<u64> {
        self.iter().collect()
    }

    /// Heap bytes used.
    pub fn capacity_bytes(&self) -> usize {
        self.runs.capacity() * std::mem::size_of::<Progression>()
    }
}

/// Which samples were produced by dense output (a run's horizon inside a step).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interpolated {
    /// Sorted sample indices.
    samples: Vec<usize>,
}

impl Interpolated {
    pub fn mark(&mut self, sample: usize) {
        debug_assert!(self.samples.last().is_none_or(|&s| s < sample));
        self.samples.push(sample);
    }

    pub fn get(&self, sample: usize) -> bool {
        self.samples.binary_search(&sample).is_ok()
    }

    /// Number of interpolated samples.
    pub fn count(&self) -> usize {
        self.samples.len()
    }

    /// The flags of samples `0..n`.
    pub fn to_flags(&self, n: usize) -> Vec<bool> {
        let mut flags = vec![false; n];
        for &s in self.samples.iter().take_while(|&&s| s < n) {
            flags[s] = true;
        }
        flags
    }

    pub fn truncate(&mut self, n: usize) {
        let keep = self.samples.partition_point(|&s| s < n);
        self.samples.truncate(keep);
    }

    pub fn capacity_bytes(&self) -> usize {
        self.samples.capacity() * std::mem::size_of::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any label sequence, pushed one by one or in progressions, truncated anywhere,
        /// reads back as the plain vector it stands for.
        #[test]
        fn labels_read_back_as_the_plain_sequence(
            pieces in prop::collection::vec((0u64..50, 0u64..4, 1usize..6, any::<bool>()), 0..20),
            cut in 0usize..80,
        ) {
            let mut labels = StepLabels::default();
            let mut plain = Vec::new();
            for (first, stride, n, one_by_one) in pieces {
                let seq: Vec<u64> = (0..n as u64).map(|i| first + stride * i).collect();
                if one_by_one {
                    seq.iter().for_each(|&l| labels.push(l));
                } else {
                    labels.extend_progression(first, stride, n);
                }
                plain.extend(seq);
            }
            prop_assert_eq!(labels.to_vec(), plain.clone());
            prop_assert_eq!(labels.len(), plain.len());
            for (i, &l) in plain.iter().enumerate() {
                prop_assert_eq!(labels.get(i), l);
            }
            prop_assert_eq!(labels.last(), plain.last().copied());
            labels.truncate(cut);
            plain.truncate(cut);
            prop_assert_eq!(labels.to_vec(), plain.clone());
            let mut rebuilt = StepLabels::default();
            plain.iter().for_each(|&l| rebuilt.push(l));
            prop_assert_eq!(&labels, &rebuilt);
            labels.push(7);
            plain.push(7);
            prop_assert_eq!(labels.to_vec(), plain);
        }
    }

    #[test]
    fn a_fixed_step_recording_is_one_progression() {
        let mut labels = StepLabels::default();
        labels.push(0);
        labels.extend_progression(3, 3, 1000);
        labels.push(3003);
        assert_eq!(labels.runs.len(), 1);
        assert_eq!(labels.get(1001), 3003);
    }

    #[test]
    fn interpolated_flags_truncate_and_expand() {
        let mut f = Interpolated::default();
        f.mark(2);
        f.mark(5);
        assert_eq!(
            f.to_flags(7),
            [false, false, true, false, false, true, false]
        );
        f.truncate(5);
        assert!(f.get(2) && !f.get(5));
        assert_eq!(f.count(), 1);
    }
}
