//! The re-map worker inside `run`: a pass every `mapping.interval` (the
//! first at start), the day's re-maps paced over `mapping.spread_over`
//! ([`remap_budget`]), and change records past `mapping.change_retention`
//! pruned after each pass. Passes never overlap: the next interval starts
//! counting when a pass ends.

use std::sync::Arc;

use chrono::Utc;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::config::MappingSettings;
use crate::remap::pace::remap_budget;
use crate::remap::{PassError, PassLimits, PassReport, Remapper, log_outcome};
use crate::store::{StoreError, with_store};
use crate::timestamp::truncate_to_millis;

/// Called after every pass with its outcome. `demo` narrates with it.
pub(crate) type PassObserver = Arc<dyn Fn(&Result<PassReport, PassError>) + Send + Sync>;

pub(crate) async fn remap_periodically(
    remapper: Remapper,
    settings: MappingSettings,
    shutdown: CancellationToken,
    observer: Option<PassObserver>,
) {
    let mut ticks = tokio::time::interval(settings.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tracing::info!(
        api = remapper.api().as_str(),
        every = %humantime::format_duration(settings.interval),
        "re-map worker started"
    );
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let limits = match pass_limits(&remapper, &settings).await {
            Ok(limits) => limits,
            Err(error) => {
                tracing::error!(%error, "cannot count the identities due; skipping this pass");
                continue;
            }
        };
        let outcome = remapper.pass(limits, &shutdown).await;
        log_outcome(&outcome, &remapper);
        if let Some(observer) = &observer {
            observer(&outcome);
        }
        if shutdown.is_cancelled() {
            return;
        }
        if let Err(error) = prune(&remapper, &settings).await {
            tracing::error!(%error, "cannot prune the change feed");
        }
    }
}

/// This pass's share of the re-maps due, when within the day's window.
async fn pass_limits(
    remapper: &Remapper,
    settings: &MappingSettings,
) -> Result<PassLimits, StoreError> {
    if settings.spread_over.is_zero() {
        return Ok(PassLimits::default());
    }
    let api = remapper.api();
    let now = truncate_to_millis(Utc::now());
    let due = with_store(remapper.store(), move |store| store.remaps_due(api, now)).await?;
    let remaps = remap_budget(
        due,
        now,
        settings.interval,
        settings.spread_over,
        settings.limits.batch_size(),
    );
    if let Some(budget) = remaps
        && budget < due
    {
        tracing::debug!(due, budget, "pacing the day's re-maps");
    }
    Ok(PassLimits {
        total: None,
        remaps,
    })
}

async fn prune(remapper: &Remapper, settings: &MappingSettings) -> Result<(), StoreError> {
    let retention =
        chrono::Duration::from_std(settings.change_retention).unwrap_or(chrono::TimeDelta::MAX);
    let cutoff = truncate_to_millis(Utc::now())
        .checked_sub_signed(retention)
        .unwrap_or(chrono::DateTime::UNIX_EPOCH);
    let pruned = with_store(remapper.store(), move |store| store.prune_changes(cutoff)).await?;
    if pruned > 0 {
        tracing::info!(
            pruned,
            "pruned change records past mapping.change_retention"
        );
        crate::metrics::record_changes_pruned(pruned);
    }
    Ok(())
}
