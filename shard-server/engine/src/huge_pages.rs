//! Asks Linux to back the graph's memory with transparent huge pages (2 MiB instead of 4 KiB).
//!
//! Why: a search touches about a thousand vectors and graph nodes scattered over tens of
//! megabytes, so with 4 KiB pages nearly every touch misses the TLB, and in a virtual machine
//! (nested paging) each miss costs a two-level page walk. Huge pages measured about 9 % more
//! in-process search throughput on the benchmark VM (docs/benchmarks.md).
//!
//! Distributions default `/sys/kernel/mm/transparent_hugepage/enabled` to `madvise`: only
//! regions a process advises get huge pages. usearch maps its arenas itself (anonymous
//! mappings of 8 MiB and more, doubling as the graph grows) and does not expose them, so the
//! large anonymous regions of the process are found in `/proc/self/maps` after the graph
//! grows. Each region is advised once (`MADV_HUGEPAGE`, for pages faulted later) and
//! collapsed once (`MADV_COLLAPSE`, for pages already there); both are hints, and their
//! failure (an older kernel, THP `never`) changes nothing but speed.

use std::collections::BTreeSet;

use parking_lot::Mutex;

/// Regions smaller than this are left alone: thread stacks and small allocator chunks gain
/// nothing and could grow by a partly used huge page each.
pub const MIN_REGION_BYTES: usize = 8 << 20;
const HUGE_PAGE: usize = 2 << 20;

/// Regions already advised, so that each is advised and collapsed once.
static ADVISED: Mutex<BTreeSet<(usize, usize)>> = Mutex::new(BTreeSet::new());

/// Which regions to advise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Regions {
    /// Those not advised yet: cheap, while the graph grows.
    New,
    /// All of them again: when the graph has caught up, to collapse pages that a region's
    /// earlier collapse missed (faulted in since, or regions merged by the kernel).
    All,
}

/// Advises the large anonymous regions; returns the bytes advised.
pub fn advise_large_anonymous_regions(which: Regions) -> usize {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let mut advised = ADVISED.lock();
    if which == Regions::All {
        advised.clear();
    }
    let mut bytes = 0;
    for region in anonymous_writable_regions(&maps) {
        let Some((start, end)) = huge_page_aligned(region, MIN_REGION_BYTES) else {
            continue;
        };
        if advised.insert((start, end)) {
            sys::advise(start, end - start);
            bytes += end - start;
        }
    }
    bytes
}

/// When the indexer advises, as it adds points to the graph.
pub struct Advisor {
    enabled: bool,
    since_scan: usize,
    since_all: usize,
}

impl Advisor {
    /// New regions are looked for every this many points: usearch's arenas double as the graph
    /// grows, so a scan every thousand points advises each new one soon after it is mapped,
    /// without reading /proc/self/maps for every small batch.
    const SCAN_EVERY_POINTS: usize = 1024;
    /// Once the graph has caught up after this many new points, every region is advised again.
    const ALL_AFTER_POINTS: usize = 10_000;

    /// `enabled` false makes every call a no-op (`--huge-pages false`).
    pub fn new(enabled: bool) -> Self {
        Advisor {
            enabled,
            since_scan: 0,
            since_all: 0,
        }
    }

    /// After `n` points went into the graph.
    pub fn points_added(&mut self, n: usize) {
        if !self.enabled {
            return;
        }
        self.since_scan += n;
        self.since_all += n;
        if self.since_scan >= Self::SCAN_EVERY_POINTS {
            self.since_scan = 0;
            let bytes = advise_large_anonymous_regions(Regions::New);
            if bytes > 0 {
                tracing::debug!(mib = bytes >> 20, "advised huge pages");
            }
        }
    }

    /// When the graph holds every pending point.
    pub fn caught_up(&mut self) {
        if self.enabled && self.since_all >= Self::ALL_AFTER_POINTS {
            self.since_all = 0;
            self.since_scan = 0;
            advise_large_anonymous_regions(Regions::All);
        }
    }
}

/// `(start, end)` of the private, writable mappings with no backing file or name (the heap,
/// stacks and `[vdso]` have names and are skipped), from `/proc/self/maps` text.
pub fn anonymous_writable_regions(maps: &str) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let range = fields.next()?;
            let perms = fields.next()?;
            // offset, device, inode; a sixth field is a path or a name such as [stack].
            let rest: Vec<&str> = fields.collect();
            if rest.len() != 3 || !perms.starts_with("rw") || !perms.ends_with('p') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some((
                usize::from_str_radix(start, 16).ok()?,
                usize::from_str_radix(end, 16).ok()?,
            ))
        })
        .collect()
}

/// The part of a region made of whole huge pages, if the region is at least `min_bytes` long
/// and holds at least one.
pub fn huge_page_aligned((start, end): (usize, usize), min_bytes: usize) -> Option<(usize, usize)> {
    if end.saturating_sub(start) < min_bytes {
        return None;
    }
    let aligned_start = start.checked_add(HUGE_PAGE - 1)? & !(HUGE_PAGE - 1);
    let aligned_end = end & !(HUGE_PAGE - 1);
    (aligned_end > aligned_start).then_some((aligned_start, aligned_end))
}

#[cfg(target_os = "linux")]
mod sys {
    /// `MADV_COLLAPSE` (Linux 6.1), not in every libc release yet.
    const MADV_COLLAPSE: libc::c_int = 25;

    #[allow(unsafe_code)]
    pub fn advise(start: usize, len: usize) {
        // SAFETY: madvise with these advices only changes how the kernel backs the pages of
        // a mapping that exists (it was listed in /proc/self/maps); it never changes their
        // contents, and on a range that is no longer mapped it fails with ENOMEM.
        unsafe {
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
            libc::madvise(start as *mut libc::c_void, len, MADV_COLLAPSE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    pub fn advise(_start: usize, _len: usize) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0c00000 r-xp 00000000 08:01 1234 /usr/bin/vecshard-server
55d0c1000000-55d0c1400000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0002000000 rw-p 00000000 00:00 0
7f0002000000-7f0002001000 ---p 00000000 00:00 0
7f0003000000-7f0003800000 rw-s 00000000 00:05 99 /dev/shm/x
7f0004000000-7f0004100000 rw-p 00000000 00:00 0
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
";

    #[test]
    fn only_private_writable_unnamed_mappings_are_candidates() {
        assert_eq!(
            anonymous_writable_regions(MAPS),
            vec![
                (0x7f00_0000_0000, 0x7f00_0200_0000),
                (0x7f00_0400_0000, 0x7f00_0410_0000)
            ]
        );
    }

    #[test]
    fn regions_are_trimmed_to_whole_huge_pages_and_small_ones_skipped() {
        let mib = 1 << 20;
        // 32 MiB starting 1 MiB past a huge-page boundary: 15 whole huge pages inside.
        assert_eq!(
            huge_page_aligned((0x4000_0000 + mib, 0x4000_0000 + 33 * mib), 8 * mib),
            Some((0x4000_0000 + 2 * mib, 0x4000_0000 + 32 * mib))
        );
        assert_eq!(
            huge_page_aligned((0x4000_0000, 0x4000_0000 + mib), 8 * mib),
            None
        );
        // Long enough but straddling no whole huge page.
        assert_eq!(huge_page_aligned((mib, 3 * mib - 1), mib), None);
    }

    #[test]
    fn advice_keeps_contents() {
        // A region this test maps itself, so that there is at least one to advise.
        let block: Vec<u8> = (0..3 * MIN_REGION_BYTES).map(|i| (i % 251) as u8).collect();
        advise_large_anonymous_regions(Regions::New);
        advise_large_anonymous_regions(Regions::All);
        assert!(block.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
        #[cfg(target_os = "linux")]
        assert!(
            vm_flags_of(block.as_ptr() as usize + block.len() / 2).contains(&"hg".to_string()),
            "the block's mapping should carry the huge-page advice"
        );
    }

    /// The `VmFlags` of the mapping holding `address`, from /proc/self/smaps.
    #[cfg(target_os = "linux")]
    fn vm_flags_of(address: usize) -> Vec<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((start, end)) = first.split_once('-') {
                if let (Ok(s), Ok(e)) = (
                    usize::from_str_radix(start, 16),
                    usize::from_str_radix(end, 16),
                ) {
                    inside = (s..e).contains(&address);
                    continue;
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return flags.split_whitespace().map(String::from).collect();
                }
            }
        }
        Vec::new()
    }
}
