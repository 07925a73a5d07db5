//! `fault.inject`: test how xenith copes (only with --allow-fault-injection).

use serde::Deserialize;

use super::{Api, ApiError, ErrorCode};
use crate::actors::backend::{BackendActor, InjectPanic as BackendPanic};
use crate::actors::domain::InjectPanic as DomainPanic;
use crate::drivers::ShutdownReason;

/// What to break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    Panic,
    Kill,
    Crash,
    Hang,
}

fn unsupported(part: &str, kind: FaultKind) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidParams,
        format!("fault {kind:?} is not supported for part {part:?}"),
    )
    .with_details(vec![part.to_owned()])
}

impl Api {
    /// `fault.inject {vm, part, kind}`.
    pub async fn fault_inject(
        &self,
        vm: &str,
        part: &str,
        kind: FaultKind,
    ) -> Result<(), ApiError> {
        if !self.inner.allow_faults {
            return Err(ApiError::new(
                ErrorCode::NotAllowed,
                "fault injection is off (start xenithd with --allow-fault-injection)",
            ));
        }
        let handle = self.resolve(vm).await?;
        let domid = handle.snapshot().domid;
        match (part, kind) {
            ("domain", FaultKind::Panic) => {
                let addr = handle.domain_addr().ok_or_else(|| {
                    ApiError::new(ErrorCode::InternalError, "the domain actor is not running")
                })?;
                // Its handler panics: the send fails, which is the point.
                let _ = addr.send(DomainPanic).await;
                Ok(())
            }
            ("domain", FaultKind::Crash | FaultKind::Kill) => {
                let d = domid.ok_or_else(|| halted(vm))?;
                let driver = self.inner.driver.clone();
                let domid = crate::drivers::DomId(d);
                let call = move || match kind {
                    FaultKind::Crash => driver.shutdown(domid, ShutdownReason::Crash),
                    _ => driver.destroy(domid),
                };
                tokio::task::spawn_blocking(call)
                    .await
                    .map_err(ApiError::internal)?
                    .map_err(ApiError::internal)
            }
            (p, FaultKind::Panic) if p.starts_with("vbd:") || p.starts_with("vif:") => {
                let sup = handle.supervisor().ok_or_else(|| halted(vm))?;
                let addr = sup
                    .child::<BackendActor>(p)
                    .await
                    .map_err(ApiError::internal)?
                    .ok_or_else(|| {
                        ApiError::new(
                            ErrorCode::NotFound,
                            format!("no device {p} on a running VM {vm}"),
                        )
                        .with_details(vec![p.to_owned()])
                    })?;
                let _ = addr.send(BackendPanic).await;
                Ok(())
            }
            ("emulator" | "console" | "agent", _) => Err(ApiError::new(
                ErrorCode::NotFound,
                format!("VM {vm} has no {part} actor in this build"),
            )
            .with_details(vec![part.to_owned()])),
            _ => Err(unsupported(part, kind)),
        }
    }
}

fn halted(vm: &str) -> ApiError {
    ApiError::new(
        ErrorCode::VmBadPowerState,
        format!("VM {vm} has no running domain"),
    )
    .with_details(vec![vm.to_owned(), "Running".into(), "Halted".into()])
}
