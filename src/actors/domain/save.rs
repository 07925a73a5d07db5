//! Suspend and resume: the VM's memory goes into an image xenith keeps
//! (drivers::migration::SuspendImages), framed by crate::vm::image, and
//! comes back from it into a new domain.
//!
//! The save runs on the blocking pool (the hypervisor's memory stream
//! takes as long as it takes); what it needs midway, the guest's suspend,
//! it asks this side over a channel, as the save helper asks xenithd on
//! a Xen host. A guest that does not suspend in time keeps running; a
//! save that fails after the guest suspended resumes it
//! (xc_domain_resume); a partial image is removed.

use std::io::{BufReader, BufWriter};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::env::Ctx;
use super::error::VmError;
use super::lifecycle::{self, Running, Source};
use super::state::Outcome;
use crate::drivers::migration::{SaveError, SaveHooks, SaveOptions, SaveProgress, SaveStats};
use crate::drivers::storage::Job;
use crate::drivers::{DomId, ShutdownReason};
use crate::vm::image::{self, ImageError, ImageHeader, ImageKind, ImageWriter};
use crate::vm::{layout, VmRecord};

/// How long a suspend waits for the guest by default.
pub const SUSPEND_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the domain is looked at while the guest suspends.
const POLL: Duration = Duration::from_millis(20);

/// What the save, on its thread, asks of the async side.
pub(super) enum Ask {
    Suspend(std::sync::mpsc::SyncSender<Result<(), SaveError>>),
}

/// The save's hooks, on the blocking thread: the suspend is asked over
/// the channel, progress goes to the task.
pub(super) struct ThreadHooks {
    pub asks: mpsc::UnboundedSender<Ask>,
    pub job: Job,
}

impl SaveHooks for ThreadHooks {
    fn suspend(&mut self) -> Result<(), SaveError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.asks
            .send(Ask::Suspend(tx))
            .map_err(|_| SaveError::Suspend("the toolstack stopped waiting".into()))?;
        rx.recv()
            .map_err(|_| SaveError::Suspend("the toolstack stopped waiting".into()))?
    }

    fn progress(&mut self, p: SaveProgress) {
        // The first pass is most of the work; the later ones the rest.
        let frac = p.sent as f64 / p.pages.max(1) as f64;
        let done = if p.iteration <= 1 {
            0.9 * frac
        } else {
            0.9 + 0.09 * frac
        };
        self.job.set_progress(done);
    }

    fn cancelled(&self) -> bool {
        self.job.is_cancelled()
    }
}

/// Asks the guest to suspend (control/shutdown = "suspend") and waits for
/// its domain to shut down with SHUTDOWN_suspend. In time or not at all:
/// the request is withdrawn at the timeout, and the guest keeps running.
pub(super) async fn guest_suspend(
    c: &Ctx,
    domid: DomId,
    timeout: Duration,
) -> Result<(), SaveError> {
    let key = layout::control_shutdown(domid);
    c.env
        .xs
        .write(&key, "suspend")
        .await
        .map_err(|e| SaveError::Suspend(format!("cannot ask the guest: {e}")))?;
    let deadline = Instant::now() + timeout;
    loop {
        match c.env.hv.domain_info(domid).await {
            Ok(info) => match info.shutdown {
                Some(ShutdownReason::Suspend) => return Ok(()),
                Some(other) => {
                    return Err(SaveError::Suspend(format!(
                        "the domain shut down ({other}) instead"
                    )))
                }
                None => {}
            },
            Err(e) => return Err(SaveError::Suspend(crate::error::chain(&e))),
        }
        if Instant::now() >= deadline {
            let _ = c.env.xs.write(&key, "").await;
            return Err(SaveError::Suspend(format!("no answer within {timeout:?}")));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Serves the save's asks until `work` ends.
pub(super) async fn serve<T>(
    c: &Ctx,
    domid: DomId,
    timeout: Duration,
    mut asks: mpsc::UnboundedReceiver<Ask>,
    work: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return done,
            Some(ask) = asks.recv() => match ask {
                Ask::Suspend(reply) => {
                    let t0 = Instant::now();
                    let r = guest_suspend(c, domid, timeout).await;
                    tracing::debug!(step = "suspend the guest", elapsed_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX), ok = r.is_ok(), "step done");
                    let _ = reply.send(r);
                }
            },
        }
    }
}

/// A save's failure, as the VM's error.
pub(super) fn save_error(step: &str, e: SaveError) -> VmError {
    match e {
        SaveError::Suspend(reason) => VmError::NoSuspend { reason },
        SaveError::Unsupported(m) => VmError::Unsupported(m),
        e => VmError::step(step, &e),
    }
}

fn image_error(e: ImageError) -> VmError {
    VmError::step("write the suspend image", &e)
}

/// The image's Header for this VM.
pub(super) fn header(c: &Ctx, kind: ImageKind) -> ImageHeader {
    ImageHeader {
        kind,
        memory_format: c.env.saver.memory_format().to_owned(),
        domain_type: serde_json::to_value(c.spec.domain_type)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        memory_mib: c.spec.memory_mib,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

/// The Vm record's body: the VM's record as it is now.
pub(super) fn vm_record(c: &Ctx) -> Result<Vec<u8>, VmError> {
    let record = VmRecord {
        uuid: c.uuid,
        spec: (*c.spec).clone(),
    };
    serde_json::to_vec(&record).map_err(|e| VmError::step("encode the VM record", &e))
}

/// Suspends the running VM into its image; the domain then goes.
pub(super) async fn suspend(c: &Ctx, r: &Running, timeout: Duration, job: Job) -> Outcome {
    if let Err(e) = c.env.saver.supports(c.spec.domain_type) {
        return Outcome::Failed(save_error("suspend", e));
    }
    let t0 = Instant::now();
    match save_image(c, r.domid, timeout, job).await {
        Ok(stats) => {
            tracing::info!(vm = %c.spec.name, domid = %r.domid, bytes = stats.bytes, elapsed_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX), "suspended");
            lifecycle::teardown(c, r).await;
            Outcome::Suspended
        }
        Err(e) => {
            resume_in_place(c, r.domid).await;
            Outcome::FailedRunning(e)
        }
    }
}

/// A save abandoned after the guest suspended: it carries on.
pub(super) async fn resume_in_place(c: &Ctx, domid: DomId) {
    let suspended = matches!(c.env.hv.domain_info(domid).await, Ok(i) if i.shutdown == Some(ShutdownReason::Suspend));
    if !suspended {
        return;
    }
    let saver = c.env.saver.clone();
    match crate::drivers::blocking::run(move || saver.resume(domid)).await {
        Ok(Ok(())) => {
            tracing::info!(vm = %c.spec.name, %domid, "save abandoned: the guest resumed")
        }
        Ok(Err(e)) => {
            tracing::error!(vm = %c.spec.name, %domid, error = %crate::error::chain(&e), "save abandoned, and the guest cannot resume")
        }
        Err(e) => tracing::error!(vm = %c.spec.name, %domid, error = %e, "resume"),
    }
}

async fn save_image(
    c: &Ctx,
    domid: DomId,
    timeout: Duration,
    job: Job,
) -> Result<SaveStats, VmError> {
    let header = header(c, ImageKind::Suspend);
    let vm = vm_record(c)?;
    let (saver, images, uuid) = (c.env.saver.clone(), c.env.suspends.clone(), c.uuid);
    let (asks_tx, asks) = mpsc::unbounded_channel();
    let work = crate::drivers::blocking::run(move || {
        let mut hooks = ThreadHooks { asks: asks_tx, job };
        let result = (|| -> Result<SaveStats, VmError> {
            let file = images
                .create(&uuid)
                .map_err(|e| VmError::step("create the suspend image", &e))?;
            let mut w =
                ImageWriter::begin(BufWriter::new(file), &header, &vm).map_err(image_error)?;
            let stats = saver
                .save(domid, &SaveOptions::suspend(), &mut w, &mut hooks)
                .map_err(|e| save_error("save the memory", e))?;
            let file = w
                .finish()
                .map_err(image_error)?
                .into_inner()
                .map_err(|e| VmError::step("write the suspend image", e.error()))?;
            images
                .commit(&uuid, file)
                .map_err(|e| VmError::step("sync the suspend image", &e))?;
            Ok(stats)
        })();
        if result.is_err() {
            images.discard_partial(&uuid);
        }
        result
    });
    serve(c, domid, timeout, asks, work)
        .await
        .map_err(|e| VmError::step("save", &e))?
}

/// Resumes a Suspended VM: from its image into a new domain (the image
/// checked whole first, so a bad one makes no domain), or, if its domain
/// is still there suspended, that domain resumed.
pub(super) async fn resume(c: &Ctx, running: Option<Running>, paused: bool) -> Outcome {
    if let Some(r) = running {
        let saver = c.env.saver.clone();
        let domid = r.domid;
        return match crate::drivers::blocking::run(move || saver.resume(domid)).await {
            Ok(Ok(())) => Outcome::State(super::state::PowerState::Running),
            Ok(Err(e)) => Outcome::Failed(save_error("resume the domain", e)),
            Err(e) => Outcome::Failed(VmError::step("resume the domain", &e)),
        };
    }
    if let Err(e) = check_image(c).await {
        return Outcome::Failed(e);
    }
    let images = c.env.suspends.clone();
    let uuid = c.uuid;
    let opened = crate::drivers::blocking::run(move || images.open(&uuid)).await;
    let file = match opened {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return Outcome::Failed(VmError::step("open the suspend image", &e)),
        Err(e) => return Outcome::Failed(VmError::step("open the suspend image", &e)),
    };
    let source = Source::Restore(Box::new(BufReader::new(file)));
    match lifecycle::start_from(c, paused, source).await {
        Ok(running) => {
            let images = c.env.suspends.clone();
            if let Ok(Err(e)) = crate::drivers::blocking::run(move || images.remove(&uuid)).await {
                tracing::warn!(vm = %c.spec.name, error = %e, "the resumed VM's image stays behind");
            }
            match c.env.hv.subscribe(running.domid).await {
                Ok(events) => Outcome::Started {
                    running,
                    events,
                    paused,
                },
                Err(e) => {
                    lifecycle::teardown(c, &running).await;
                    Outcome::FailedHalted(e.into())
                }
            }
        }
        Err(e) => Outcome::Failed(e),
    }
}

/// The VM's image, read whole and checked: its records and digest, that
/// it is this VM's and in this host's memory format.
async fn check_image(c: &Ctx) -> Result<(), VmError> {
    let (images, uuid) = (c.env.suspends.clone(), c.uuid);
    let format = c.env.saver.memory_format();
    let checked = crate::drivers::blocking::run(move || -> Result<(), String> {
        let file = images.open(&uuid).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "the VM has no suspend image".to_owned(),
            _ => format!("cannot open it: {e}"),
        })?;
        let header = image::verify(BufReader::new(file)).map_err(|e| e.to_string())?;
        if header.kind != ImageKind::Suspend {
            return Err("it is not a suspend image".into());
        }
        if header.memory_format != format {
            return Err(format!(
                "its memory is in the {} format; this host reads {format}",
                header.memory_format
            ));
        }
        let file = images.open(&uuid).map_err(|e| e.to_string())?;
        let reader = image::ImageReader::open(BufReader::new(file)).map_err(|e| e.to_string())?;
        let record: VmRecord =
            serde_json::from_slice(reader.vm()).map_err(|e| format!("its VM record: {e}"))?;
        if record.uuid != uuid {
            return Err(format!("it is VM {}'s", record.uuid));
        }
        Ok(())
    })
    .await
    .map_err(|e| VmError::step("check the suspend image", &e))?;
    checked.map_err(VmError::BadImage)
}

/// Throws a Suspended VM's image away (a hard shutdown of it).
pub(super) async fn discard(c: &Ctx) -> Result<(), VmError> {
    let (images, uuid) = (c.env.suspends.clone(), c.uuid);
    crate::drivers::blocking::run(move || images.remove(&uuid))
        .await
        .map_err(|e| VmError::step("remove the suspend image", &e))?
        .map_err(|e| VmError::step("remove the suspend image", &e))
}
