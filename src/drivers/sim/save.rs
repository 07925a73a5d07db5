//! Saving and restoring simulated domains: a memory stream of the
//! domain's size ("sim-memory-1"), made and checked page by page, with
//! pre-copy iterations against a guest that dirties pages while it runs,
//! as libxc's save does against a real one.
//!
//! ```text
//! "SIMMEM01" | pages u64 | seed u64 | length u32 | guest JSON
//! batch*     = count u32 (1..=1024) | pfn u64 * count | generation u32 * count
//!              | page[4096] * count
//! end        = 0u32 | digest u64 (of the head and every page's generation)
//! ```
//!
//! A page's bytes follow from the domain's seed, its pfn and its
//! generation, so the restoring side checks each one, and the digest
//! that the last copy of every page arrived.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{domain, Inner, SimHypervisor};
use crate::drivers::hypervisor::{Built, DomId, DomainType, ShutdownReason};
use crate::drivers::migration::{
    DomainSaver, SaveError, SaveHooks, SaveOptions, SaveProgress, SaveStats,
};

pub const FORMAT: &str = "sim-memory-1";
const MAGIC: &[u8; 8] = b"SIMMEM01";
const PAGE: usize = 4096;
const BATCH: usize = 1024;

/// A new domain's memory seed.
pub(super) fn seed(uuid: &[u8; 16], domid: u16) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() ^ (u64::from(d.subsec_nanos()) << 32));
    let mut s = u64::from(domid) ^ now;
    for chunk in uuid.chunks(8) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        s = mix(s ^ u64::from_le_bytes(b));
    }
    s
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The bytes of page `pfn` at `generation`.
fn fill(seed: u64, pfn: u64, generation: u32, page: &mut [u8]) {
    let base = mix(seed ^ pfn.rotate_left(20) ^ (u64::from(generation) << 44));
    for (k, word) in page.chunks_exact_mut(8).enumerate() {
        let v = base ^ (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        word.copy_from_slice(&v.to_le_bytes());
    }
}

/// A digest of the stream's head and of every page's generation.
fn digest(head: &[u8], pages: u64, generation: impl Fn(u64) -> u32) -> u64 {
    let start = head.chunks(8).fold(0u64, |acc, chunk| {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        mix(acc ^ u64::from_le_bytes(b))
    });
    (0..pages).fold(start, |acc, pfn| {
        let g = generation(pfn);
        if g == 0 {
            acc
        } else {
            acc.wrapping_add(mix(pfn ^ (u64::from(g) << 40)))
        }
    })
}

/// What a restored guest needs besides its memory.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GuestState {
    cmdline: String,
    domain_type: DomainType,
}

fn io(e: std::io::Error) -> SaveError {
    SaveError::from_io(e)
}

impl Inner {
    /// The domain's pages, and what its memory is now.
    fn memory_of(&self, domid: DomId) -> Result<(u64, u64, GuestState), SaveError> {
        let mut st = self.state();
        let d = domain(&mut st, domid)?;
        Ok((
            d.memory_mib * 256,
            d.memory_seed,
            GuestState {
                cmdline: d.built_cmdline.clone(),
                domain_type: d.domain_type,
            },
        ))
    }

    /// The generations of these pages, as the domain holds them now.
    fn generations_of(&self, domid: DomId, pfns: &[u64]) -> Result<Vec<u32>, SaveError> {
        let mut st = self.state();
        let d = domain(&mut st, domid)?;
        Ok(pfns
            .iter()
            .map(|p| d.generations.get(p).copied().unwrap_or(0))
            .collect())
    }

    /// The guest ran while `sent` pages went: it wrote one page in eight of
    /// as many (at pseudo-random pfns), unless it is suspended or paused.
    /// Returns the pages it dirtied.
    fn guest_runs(&self, domid: DomId, sent: u64, round: u64) -> Result<Vec<u64>, SaveError> {
        let mut st = self.state();
        let d = domain(&mut st, domid)?;
        if d.shutdown.is_some() || d.paused {
            return Ok(Vec::new());
        }
        let pages = d.memory_mib * 256;
        let mut dirty: Vec<u64> = (0..sent / 8)
            .map(|i| mix(d.memory_seed ^ round.rotate_left(32) ^ i) % pages)
            .collect();
        dirty.sort_unstable();
        dirty.dedup();
        for pfn in &dirty {
            *d.generations.entry(*pfn).or_insert(0) += 1;
        }
        Ok(dirty)
    }
}

/// Writes batches of pages, reporting progress.
struct Sender<'a> {
    out: &'a mut dyn Write,
    hooks: &'a mut dyn SaveHooks,
    seed: u64,
    total_pages: u64,
    stats: SaveStats,
    buf: Vec<u8>,
}

impl Sender<'_> {
    fn send(
        &mut self,
        inner: &Inner,
        domid: DomId,
        iteration: u32,
        pfns: &[u64],
    ) -> Result<(), SaveError> {
        let mut sent = 0u64;
        for batch in pfns.chunks(BATCH) {
            if self.hooks.cancelled() {
                return Err(SaveError::Cancelled);
            }
            let generations = inner.generations_of(domid, batch)?;
            self.buf.clear();
            self.buf
                .extend_from_slice(&u32::try_from(batch.len()).unwrap_or(0).to_le_bytes());
            for pfn in batch {
                self.buf.extend_from_slice(&pfn.to_le_bytes());
            }
            for g in &generations {
                self.buf.extend_from_slice(&g.to_le_bytes());
            }
            let at = self.buf.len();
            self.buf.resize(at + batch.len() * PAGE, 0);
            for (i, (pfn, g)) in batch.iter().zip(&generations).enumerate() {
                let start = at + i * PAGE;
                fill(self.seed, *pfn, *g, &mut self.buf[start..start + PAGE]);
            }
            self.out.write_all(&self.buf).map_err(io)?;
            self.stats.bytes += self.buf.len() as u64;
            self.stats.pages_sent += batch.len() as u64;
            sent += batch.len() as u64;
            self.hooks.progress(SaveProgress {
                iteration,
                sent,
                pages: pfns.len() as u64,
                total_pages: self.total_pages,
            });
        }
        Ok(())
    }
}

impl DomainSaver for SimHypervisor {
    fn memory_format(&self) -> &'static str {
        FORMAT
    }

    fn supports(&self, domain_type: DomainType) -> Result<(), SaveError> {
        match domain_type {
            DomainType::Pv | DomainType::Pvh => Ok(()),
            // Its device model's state would go with it (QMP
            // xen-save-devices-state), which the simulated host's QEMU
            // (not a Xen device model) cannot give.
            DomainType::Hvm => Err(SaveError::Unsupported(
                "an HVM guest cannot be saved on the simulated host (its QEMU is no Xen device model)"
                    .into(),
            )),
        }
    }

    fn save(
        &self,
        domid: DomId,
        options: &SaveOptions,
        out: &mut dyn Write,
        hooks: &mut dyn SaveHooks,
    ) -> Result<SaveStats, SaveError> {
        crate::drivers::blocking::debug_assert_blocking_allowed("a simulated save");
        let inner: &Arc<Inner> = &self.inner;
        let (pages, seed, guest) = inner.memory_of(domid)?;
        self.supports(guest.domain_type)?;
        let guest = serde_json::to_vec(&guest).map_err(|e| SaveError::Corrupt(e.to_string()))?;
        let mut head = MAGIC.to_vec();
        head.extend_from_slice(&pages.to_le_bytes());
        head.extend_from_slice(&seed.to_le_bytes());
        head.extend_from_slice(&u32::try_from(guest.len()).unwrap_or(0).to_le_bytes());
        head.extend_from_slice(&guest);
        out.write_all(&head).map_err(io)?;
        let mut tx = Sender {
            out,
            hooks,
            seed,
            total_pages: pages,
            stats: SaveStats {
                bytes: head.len() as u64,
                ..SaveStats::default()
            },
            buf: Vec::with_capacity(BATCH * (PAGE + 12) + 4),
        };
        let all: Vec<u64> = (0..pages).collect();
        if !options.live {
            tx.hooks.suspend()?;
            tx.send(inner, domid, 1, &all)?;
            tx.stats.iterations = 1;
            tx.stats.final_pages = pages;
        } else {
            // Pre-copy: everything, then what the guest dirtied meanwhile,
            // until little is left or the iterations run out.
            tx.send(inner, domid, 1, &all)?;
            let mut iteration = 1u32;
            let mut dirty = inner.guest_runs(domid, pages, 1)?;
            while dirty.len() as u64 > options.dirty_threshold_pages
                && iteration < options.max_iterations.max(1)
            {
                iteration += 1;
                tx.send(inner, domid, iteration, &dirty)?;
                let more = inner.guest_runs(domid, dirty.len() as u64, u64::from(iteration))?;
                dirty = more;
            }
            tx.hooks.suspend()?;
            // The guest dirtied nothing more once suspended.
            iteration += 1;
            tx.send(inner, domid, iteration, &dirty)?;
            tx.stats.iterations = iteration;
            tx.stats.final_pages = dirty.len() as u64;
        }
        let generations = {
            let mut st = inner.state();
            let d = domain(&mut st, domid)?;
            if d.shutdown != Some(ShutdownReason::Suspend) {
                return Err(SaveError::Suspend(
                    "the domain is not suspended at the end of the save".into(),
                ));
            }
            d.generations.clone()
        };
        let sum = digest(&head, pages, |p| generations.get(&p).copied().unwrap_or(0));
        let mut end = 0u32.to_le_bytes().to_vec();
        end.extend_from_slice(&sum.to_le_bytes());
        tx.out.write_all(&end).map_err(io)?;
        tx.out.flush().map_err(io)?;
        tx.stats.bytes += end.len() as u64;
        Ok(tx.stats)
    }

    fn restore(&self, domid: DomId, input: &mut dyn Read) -> Result<Built, SaveError> {
        crate::drivers::blocking::debug_assert_blocking_allowed("a simulated restore");
        let mut head = [0u8; 28];
        input.read_exact(&mut head).map_err(io)?;
        if &head[..8] != MAGIC {
            return Err(SaveError::Corrupt(format!(
                "not a {FORMAT} stream (bad magic)"
            )));
        }
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&head[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let (pages, seed) = (word(8), word(16));
        let length = u32::from_le_bytes([head[24], head[25], head[26], head[27]]) as usize;
        if length > 64 * 1024 {
            return Err(SaveError::Corrupt(format!("guest state of {length} bytes")));
        }
        let mut guest = vec![0u8; length];
        input.read_exact(&mut guest).map_err(io)?;
        let mut whole_head = head.to_vec();
        whole_head.extend_from_slice(&guest);
        let guest: GuestState =
            serde_json::from_slice(&guest).map_err(|e| SaveError::Corrupt(e.to_string()))?;
        let (have_pages, _, _) = self.inner.memory_of(domid)?;
        if pages != have_pages {
            return Err(SaveError::Corrupt(format!(
                "the stream has {pages} pages, the domain {have_pages}"
            )));
        }
        let pages_usize =
            usize::try_from(pages).map_err(|_| SaveError::Corrupt(format!("{pages} pages")))?;
        // The generation each page last arrived with (u32::MAX: not yet).
        let mut got = vec![u32::MAX; pages_usize];
        let mut page = vec![0u8; PAGE];
        let mut want = vec![0u8; PAGE];
        loop {
            let mut count = [0u8; 4];
            input.read_exact(&mut count).map_err(io)?;
            let count = u32::from_le_bytes(count) as usize;
            if count == 0 {
                break;
            }
            if count > BATCH {
                return Err(SaveError::Corrupt(format!("a batch of {count} pages")));
            }
            let mut meta = vec![0u8; count * 12];
            input.read_exact(&mut meta).map_err(io)?;
            for i in 0..count {
                let mut b = [0u8; 8];
                b.copy_from_slice(&meta[i * 8..i * 8 + 8]);
                let pfn = u64::from_le_bytes(b);
                let g_at = count * 8 + i * 4;
                let g = u32::from_le_bytes([
                    meta[g_at],
                    meta[g_at + 1],
                    meta[g_at + 2],
                    meta[g_at + 3],
                ]);
                if pfn >= pages || g == u32::MAX {
                    return Err(SaveError::Corrupt(format!("page {pfn} (of {pages})")));
                }
                input.read_exact(&mut page).map_err(io)?;
                fill(seed, pfn, g, &mut want);
                if page != want {
                    return Err(SaveError::Corrupt(format!(
                        "page {pfn} does not hold what it should"
                    )));
                }
                if let Some(slot) = usize::try_from(pfn).ok().and_then(|i| got.get_mut(i)) {
                    *slot = g;
                }
            }
        }
        let mut sum = [0u8; 8];
        input.read_exact(&mut sum).map_err(io)?;
        if let Some(missing) = got.iter().position(|g| *g == u32::MAX) {
            return Err(SaveError::Corrupt(format!("page {missing} never arrived")));
        }
        let at = |p: u64| {
            usize::try_from(p)
                .ok()
                .and_then(|i| got.get(i).copied())
                .unwrap_or(u32::MAX)
        };
        if digest(&whole_head, pages, at) != u64::from_le_bytes(sum) {
            return Err(SaveError::Corrupt(
                "the stream's head or pages are not what the guest had".into(),
            ));
        }
        let mut st = self.inner.state();
        let port = st.next_port;
        st.next_port += 2;
        let d = domain(&mut st, domid)?;
        if d.built {
            return Err(SaveError::Corrupt(format!(
                "domain {domid} is built already"
            )));
        }
        d.built = true;
        d.memory_seed = seed;
        d.generations = got
            .iter()
            .enumerate()
            .filter(|(_, g)| **g != 0)
            .map(|(p, g)| (p as u64, *g))
            .collect::<HashMap<_, _>>();
        d.cmdline = Some(guest.cmdline.clone());
        d.built_cmdline = guest.cmdline;
        d.resumed = true;
        let top = d.memory_mib * 256;
        Ok(Built {
            store_port: port,
            store_gfn: top - 2,
            console_port: port + 1,
            console_gfn: top - 1,
        })
    }

    fn resume(&self, domid: DomId) -> Result<(), SaveError> {
        let mut st = self.inner.state();
        let d = domain(&mut st, domid)?;
        if d.shutdown != Some(ShutdownReason::Suspend) {
            return Err(SaveError::Suspend(format!(
                "domain {domid} is not suspended"
            )));
        }
        d.shutdown = None;
        d.paused = false;
        d.cmdline = Some(d.built_cmdline.clone());
        d.resumed = true;
        d.running.send_replace(true);
        self.inner.spawn_guest(domid, d);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;
    use crate::drivers::hypervisor::{BootImage, DomainConfig, Hypervisor};

    struct Hooks<'a> {
        hv: &'a SimHypervisor,
        domid: DomId,
        suspend: bool,
        suspended_at: Option<u32>,
        last: Option<SaveProgress>,
    }

    impl SaveHooks for Hooks<'_> {
        fn suspend(&mut self) -> Result<(), SaveError> {
            if !self.suspend {
                return Err(SaveError::Suspend("no answer".into()));
            }
            self.suspended_at = Some(self.last.map_or(0, |p| p.iteration));
            self.hv.shutdown(self.domid, ShutdownReason::Suspend)?;
            Ok(())
        }

        fn progress(&mut self, progress: SaveProgress) {
            self.last = Some(progress);
        }
    }

    fn host() -> SimHypervisor {
        SimHypervisor::new(SimConfig {
            total_mib: 4096,
            dom0_mib: 512,
            cpus: 2,
        })
    }

    fn running(hv: &SimHypervisor, mib: u64) -> DomId {
        let d = hv
            .create_domain(&DomainConfig {
                uuid: [3; 16],
                domain_type: DomainType::Pv,
                memory_mib: mib,
                vcpus: 1,
            })
            .unwrap();
        hv.build_domain(
            d,
            &BootImage {
                kernel: "/k".into(),
                ramdisk: None,
                cmdline: "console=hvc0".into(),
                firmware: Default::default(),
            },
        )
        .unwrap();
        hv.unpause(d).unwrap();
        d
    }

    fn save(hv: &SimHypervisor, d: DomId, options: SaveOptions) -> (Vec<u8>, SaveStats) {
        let mut out = Vec::new();
        let mut hooks = Hooks {
            hv,
            domid: d,
            suspend: true,
            suspended_at: None,
            last: None,
        };
        let stats = hv.save(d, &options, &mut out, &mut hooks).unwrap();
        assert!(hooks.suspended_at.is_some());
        (out, stats)
    }

    fn fresh(hv: &SimHypervisor, mib: u64) -> DomId {
        hv.create_domain(&DomainConfig {
            uuid: [3; 16],
            domain_type: DomainType::Pv,
            memory_mib: mib,
            vcpus: 1,
        })
        .unwrap()
    }

    #[test]
    fn a_live_save_converges_and_restores_the_last_pages() {
        let hv = host();
        let d = running(&hv, 16);
        let (stream, stats) = save(&hv, d, SaveOptions::live());
        let pages = 16 * 256;
        assert!(stats.iterations >= 3, "{stats:?}");
        assert!(stats.pages_sent > pages, "dirty pages were sent again");
        assert!(stats.final_pages <= 50, "{stats:?}");
        assert_eq!(stats.bytes, stream.len() as u64);
        let r = fresh(&hv, 16);
        hv.restore(r, &mut &stream[..]).unwrap();
        hv.unpause(r).unwrap();
        assert!(!hv.domain_info(r).unwrap().paused);
    }

    #[test]
    fn a_suspend_save_sends_each_page_once() {
        let hv = host();
        let d = running(&hv, 8);
        let (stream, stats) = save(&hv, d, SaveOptions::suspend());
        assert_eq!((stats.pages_sent, stats.iterations), (8 * 256, 1));
        let r = fresh(&hv, 8);
        hv.restore(r, &mut &stream[..]).unwrap();
    }

    #[test]
    fn restore_refuses_damage_and_the_wrong_size() {
        let hv = host();
        let d = running(&hv, 4);
        let (stream, _) = save(&hv, d, SaveOptions::live());
        for at in [3, 40, stream.len() / 2, stream.len() - 3] {
            let mut bad = stream.clone();
            bad[at] ^= 1;
            let r = fresh(&hv, 4);
            assert!(hv.restore(r, &mut &bad[..]).is_err(), "flip at {at}");
            hv.destroy(r).unwrap();
        }
        let r = fresh(&hv, 4);
        let cut = hv
            .restore(r, &mut &stream[..stream.len() - 100])
            .unwrap_err();
        assert!(matches!(cut, SaveError::Corrupt(_)), "{cut}");
        let big = fresh(&hv, 8);
        assert!(hv.restore(big, &mut &stream[..]).is_err());
    }

    #[test]
    fn a_guest_that_does_not_suspend_keeps_running() {
        let hv = host();
        let d = running(&hv, 4);
        let mut hooks = Hooks {
            hv: &hv,
            domid: d,
            suspend: false,
            suspended_at: None,
            last: None,
        };
        let err = hv
            .save(d, &SaveOptions::suspend(), &mut Vec::new(), &mut hooks)
            .unwrap_err();
        assert!(matches!(err, SaveError::Suspend(_)));
        assert_eq!(hv.domain_info(d).unwrap().shutdown, None);
    }

    #[test]
    fn an_abandoned_save_resumes_the_guest() {
        let hv = host();
        let d = running(&hv, 4);
        save(&hv, d, SaveOptions::live());
        assert_eq!(
            hv.domain_info(d).unwrap().shutdown,
            Some(ShutdownReason::Suspend)
        );
        hv.resume(d).unwrap();
        assert_eq!(hv.domain_info(d).unwrap().shutdown, None);
        assert!(hv.resume(d).is_err(), "not suspended any more");
    }
}
