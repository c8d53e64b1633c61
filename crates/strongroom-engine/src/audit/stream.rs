//! Following a tenant's chain (StreamEvents): the events after a sequence,
//! read from the store in chain order, then, when following, the new ones
//! as they are written, on this server or another sharing the database.
//!
//! A feed holds no queue that writers fill: it reads the store from its
//! cursor whenever its reader asks for more. Writers only send wake-ups
//! (`AuditStore::appended`, a bounded broadcast where a follower that falls
//! behind is told it lagged, which wakes it just the same), so a reader
//! that stops reading costs them nothing: it falls behind and reads the
//! store from its cursor when it resumes. Change notices from other servers
//! wake it too, and it polls, so a lost wake-up only delays it.
//!
//! A feed carries what only its reader may read: it checks again that the
//! reader still exists and is enabled, with a role that reads the chain, in
//! the same environments, in an active (not suspended) tenant, at once on a change of who the tenant's callers are
//! (applied here from this server's commits or another's notice) and every
//! [`FEED_RECHECK`] whatever the notices, and ends PERMISSION_DENIED when
//! not.

use std::time::Duration;

use strongroom_core::audit::{Action, AuditEvent};
use strongroom_core::ids::{PrincipalId, TenantId};
use strongroom_core::names::Environment;
use strongroom_core::principal::{PrincipalStatus, Role};
use strongroom_core::scope::Authenticated;
use strongroom_core::store::Change;
use strongroom_core::tenant::TenantStatus;
use strongroom_core::{Error, Result};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::{CallContext, Engine};

/// Events read from the store per look.
pub const FEED_BATCH: u32 = 256;

/// How often a following feed looks at the store without a wake-up.
pub const FEED_POLL: Duration = Duration::from_millis(500);

/// How often a long-running feed checks that its reader may still read
/// the chain (enabled, with a role that reads it, in the same
/// environments).
const FEED_RECHECK: Duration = Duration::from_secs(2);

/// The roles that may stream a tenant's chain.
const FEED_ROLES: [Role; 2] = [Role::Admin, Role::Viewer];

/// Where a reader of a tenant's chain stands (see [`Engine::open_feed`]).
pub struct AuditFeed {
    tenant: TenantId,
    principal: PrincipalId,
    /// The environments the reader is confined to (none: all).
    environments: Vec<Environment>,
    /// The last sequence read.
    cursor: u64,
    /// Where a feed that does not follow ends.
    end: Option<u64>,
    appended: broadcast::Receiver<TenantId>,
    /// Every change applied here (this server's and other servers'), from
    /// the caches.
    changes: broadcast::Receiver<Change>,
    checked: tokio::time::Instant,
    /// Whether a change of who the tenant's callers are (or missed
    /// changes) calls for checking the reader again before reading on.
    recheck: bool,
}

impl std::fmt::Debug for AuditFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditFeed")
            .field("tenant", &self.tenant)
            .field("cursor", &self.cursor)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl AuditFeed {
    /// The last sequence read (events the reader may not see included).
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Whether the reader may see `event` (its environments).
    fn shows(&self, event: &AuditEvent) -> bool {
        self.environments.is_empty()
            || event
                .draft
                .environment
                .as_deref()
                .is_some_and(|e| self.environments.iter().any(|c| c.as_str() == e))
    }

    /// Waits for a wake-up about this feed's tenant, or the poll interval.
    async fn wait(&mut self) {
        let tenant = self.tenant;
        let appended = async {
            loop {
                match self.appended.recv().await {
                    Ok(t) if t == tenant => return,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => return,
                    Err(RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        let changed = async {
            loop {
                match self.changes.recv().await {
                    Ok(Change::Access(t) | Change::Keys(t) | Change::KeyRetired(t, _))
                        if t == tenant =>
                    {
                        return true;
                    }
                    Ok(Change::Credential(t, _) | Change::Data(t) | Change::Requests(t))
                        if t == tenant =>
                    {
                        return false;
                    }
                    Ok(Change::Everything) | Err(RecvError::Lagged(_)) => return true,
                    Ok(_) => {}
                    Err(RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        let recheck = tokio::select! {
            () = appended => false,
            who = changed => who,
            () = tokio::time::sleep(FEED_POLL) => false,
        };
        self.recheck |= recheck;
    }
}

impl Engine {
    /// Opens a feed of the caller's tenant chain after sequence
    /// `from_sequence - 1` (admin or viewer). Without `follow` it ends at
    /// the head as it is now. A reader confined to environments reads only
    /// their events, as in [`Engine::query_audit`].
    pub async fn open_feed(
        &self,
        caller: &Authenticated,
        ctx: &CallContext,
        from_sequence: u64,
        follow: bool,
    ) -> Result<AuditFeed> {
        let scope = caller.tenant_scope()?;
        self.require_role(&scope, ctx, Action::AuditQuery, &FEED_ROLES)
            .await?;
        // Subscribed before the first read, so nothing written after it
        // goes unnoticed.
        let appended = self.store.appended();
        let changes = self.caches.subscribe();
        let end = if follow {
            None
        } else {
            Some(self.store.audit_head(&scope).await?.sequence)
        };
        let principal = scope.principal();
        Ok(AuditFeed {
            tenant: scope.tenant_id(),
            principal: principal.id,
            environments: principal.environments.clone(),
            cursor: from_sequence.saturating_sub(1),
            end,
            appended,
            changes,
            checked: tokio::time::Instant::now(),
            recheck: false,
        })
    }

    /// The next events of `feed` the reader may see, in chain order,
    /// waiting for new ones when it follows and has read everything; `None`
    /// when a feed that does not follow has reached its end.
    /// PERMISSION_DENIED once the reader may no longer read the chain.
    pub async fn next_events(
        &self,
        caller: &Authenticated,
        feed: &mut AuditFeed,
    ) -> Result<Option<Vec<AuditEvent>>> {
        let scope = caller.tenant_scope()?;
        loop {
            if feed.end.is_some_and(|end| feed.cursor >= end) {
                return Ok(None);
            }
            if feed.recheck || feed.checked.elapsed() >= FEED_RECHECK {
                // A suspended (or shredded) tenant's readers stop too.
                if self.store.tenant(&scope).await?.status != TenantStatus::Active {
                    return Err(Error::denied(
                        "the tenant is suspended: its audit trail may not be read",
                    ));
                }
                let now = match self.store.get_principal(&scope, feed.principal).await {
                    Ok(p) => p,
                    Err(Error::NotFound(_)) => {
                        return Err(Error::denied(
                            "the principal may no longer read the audit trail",
                        ));
                    }
                    Err(e) => return Err(e),
                };
                if now.status != PrincipalStatus::Active
                    || !FEED_ROLES.contains(&now.role)
                    || now.environments != feed.environments
                {
                    return Err(Error::denied(
                        "the principal may no longer read the audit trail",
                    ));
                }
                feed.checked = tokio::time::Instant::now();
                feed.recheck = false;
            }
            let read = self
                .store
                .audit_after(&scope, feed.cursor, FEED_BATCH)
                .await?;
            let Some(last) = read.last().map(|e| e.sequence) else {
                feed.wait().await;
                continue;
            };
            let last = feed.end.map_or(last, |end| last.min(end));
            let shown: Vec<AuditEvent> = read
                .into_iter()
                .filter(|e| e.sequence <= last && feed.shows(e))
                .collect();
            feed.cursor = last;
            if !shown.is_empty() {
                return Ok(Some(shown));
            }
        }
    }
}
