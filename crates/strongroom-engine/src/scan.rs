//! Leak scanning (`ScanText`): a text searched for the tenant's stored
//! values, in every encoded form, and for well-known token formats.
//!
//! The known values of a tenant (every secret part of every version still
//! kept, not destroyed, of every credential) are compiled into one automaton
//! ([`strongroom_scan::KnownValues`]; for a whole tenant its anchored index,
//! built in time linear in the values) the first time a scan needs them, and
//! reused by every scan of the tenant until a credential of the tenant
//! changes. A change ([`Engine::commit`], or another server's change notice,
//! through `Caches::apply`) bumps the tenant's generation: a scan that
//! begins after it never uses an automaton built from reads that began
//! before it (it could miss the new value); it waits for the rebuild. The
//! rebuild starts at the change itself, in the background, for a tenant
//! scanned in the last [`ACTIVE`] (others' automata are dropped): one build
//! per tenant at a time, again at once if changes came during it, at most
//! [`MAX_CONCURRENT_BUILDS`] tenants at once. Scans that began before the
//! change keep the automaton they had. Notices being lossy, an automaton is
//! trusted for at most `cache.credential_ttl_ms` from the start of its reads
//! (then it counts as changed), and one past half of that is rebuilt ahead
//! in the background while scans keep coming. It is the one thing the
//! engine keeps in memory that is derived from plaintext beyond a call; the
//! copies made while building it are wiped.
//!
//! The automaton covers the whole tenant; what a caller learns is decided per
//! call. Findings on credentials the caller may not read the metadata of are
//! dropped, from the report and from the redaction alike, so a scan tells a
//! caller nothing about credentials it could not list. Against guessing
//! values through it: values shorter than [`MIN_SCAN_VALUE_BYTES`] are never
//! matched, scans are rate-limited per principal (`Limits::scan_limit`), and
//! findings carry the credential, the form and the offsets, never the
//! matched text. Every scan writes a `scan.text` audit event with the number
//! of findings (never the text), durably before it answers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use strongroom_core::audit::{Action, AuditDetail, Outcome};
use strongroom_core::credential::{Credential, CredentialFilter};
use strongroom_core::ids::{CredentialId, TenantId};
use strongroom_core::names::{CredentialName, Environment};
use strongroom_core::page::{MAX_PAGE_SIZE, PageRequest};
use strongroom_core::policy::{Capability, Reason};
use strongroom_core::scope::{Authenticated, TenantScope};
use strongroom_core::{Error, Result};
use strongroom_scan::{Form, KnownValues, Rule};
use zeroize::Zeroizing;

use crate::{CallContext, Engine};

/// Values shorter than this (in bytes) are never matched: a scan must not
/// confirm guesses of short values.
pub const MIN_SCAN_VALUE_BYTES: usize = 8;

/// The longest text a scan takes, in bytes.
pub const MAX_SCAN_TEXT_BYTES: usize = 4 * 1024 * 1024;

/// Most tenants whose automaton is kept at once; past this the memory
/// starts afresh.
const MAX_INDEXED_TENANTS: usize = 256;

/// Most tenants' automata built at once (each build is one blocking
/// thread's work).
const MAX_CONCURRENT_BUILDS: usize = 2;

/// The text length from which a scan looks for the well-known formats on a
/// thread of its own, beside the search of the stored values.
const FORMATS_BESIDE_FROM: usize = 256 * 1024;

/// Scans running on threads of their own (see [`SpareThreads`]).
static SCANS_ON_SPARE_THREADS: AtomicUsize = AtomicUsize::new(0);

/// A large scan's claim to two threads besides its own (the values'
/// search on lines joined, the well-known formats): held by at most one
/// scan per core at a time, so concurrent scans start at most two threads
/// each for that many scans; every other scan searches on its own thread
/// only.
struct SpareThreads;

impl SpareThreads {
    fn take() -> Option<SpareThreads> {
        static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let cores =
            *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from));
        SCANS_ON_SPARE_THREADS
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < cores).then_some(n + 1)
            })
            .ok()
            .map(|_| SpareThreads)
    }
}

impl Drop for SpareThreads {
    fn drop(&mut self) {
        SCANS_ON_SPARE_THREADS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A tenant scanned within this long has its automaton rebuilt in the
/// background after a change; others' are dropped until their next scan.
const ACTIVE: Duration = Duration::from_secs(600);

/// What to scan for, besides the text.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Only report stored values of these environments (all when empty).
    pub environments: Vec<Environment>,
    /// Also return the text with every finding replaced.
    pub redact: bool,
}

/// What a finding matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindingSource {
    /// A value stored in the tenant.
    Stored {
        /// The credential.
        credential: CredentialId,
        /// Its name.
        name: CredentialName,
        /// Its environment.
        environment: Environment,
        /// The version whose value matched.
        version: u32,
        /// How the value was encoded in the text.
        form: Form,
    },
    /// A well-known token format.
    Format(Rule),
}

impl FindingSource {
    /// The name a redaction writes: the credential's name or the rule's.
    fn label(&self) -> &str {
        match self {
            Self::Stored { name, .. } => name.as_str(),
            Self::Format(rule) => rule.as_str(),
        }
    }
}

/// One secret found in a text: what, and where (byte offsets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanFinding {
    /// What matched.
    pub source: FindingSource,
    /// Offset of the first byte.
    pub start: usize,
    /// Offset just past the last byte (a value split across lines spans the
    /// line breaks).
    pub end: usize,
}

/// A scan's answer.
pub struct ScanReport {
    /// The findings, by start offset.
    pub findings: Vec<ScanFinding>,
    /// The text with every finding replaced by `[REDACTED:name]`, when asked
    /// for. It may still hold secrets no detector knows: never logged.
    pub redacted: Option<String>,
}

impl std::fmt::Debug for ScanReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanReport")
            .field("findings", &self.findings)
            .field("redacted_len", &self.redacted.as_ref().map(String::len))
            .finish()
    }
}

/// A tenant's known values and what each label stands for.
pub(crate) struct ScanIndex {
    known: KnownValues,
    versions: Vec<(Arc<Credential>, u32)>,
}

/// One index built: what, when its reads began, and the tenant's change
/// generation then.
struct Built {
    index: Arc<ScanIndex>,
    at: Instant,
    generation: u64,
}

/// A tenant's automaton, its change generation, and its rebuilding.
struct Slot {
    /// Bumped by every change of the tenant's values (and when the built
    /// index outlives the credential TTL): a build that began at an older
    /// generation may miss a value.
    generation: u64,
    /// The last index built (kept while a newer one is built, for the
    /// scans that began before the change).
    built: Option<Built>,
    /// Whether a build runs (one per tenant at a time) and at which
    /// generation it began.
    building: Option<u64>,
    /// The last failed build: its generation and message.
    failed: Option<(u64, String)>,
    /// Tells waiting scans that a build ended.
    ended: tokio::sync::watch::Sender<u64>,
    /// The last caller that scanned (its tenant scope reads the values for
    /// a background rebuild) and when.
    builder: Option<(Arc<Authenticated>, Instant)>,
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            generation: 0,
            built: None,
            building: None,
            failed: None,
            ended: tokio::sync::watch::Sender::new(0),
            builder: None,
        }
    }
}

/// The automata of the tenants scanned lately, rebuilt in the background
/// when their values change (see the module's notes).
pub(crate) struct ScanIndexes {
    slots: Mutex<HashMap<TenantId, Slot>>,
    /// Bumped when every automaton is dropped, so a build that started
    /// before stores nothing.
    epoch: AtomicU64,
    /// Lets a change start the rebuild (set by the first scan).
    engine: std::sync::OnceLock<std::sync::Weak<Engine>>,
    /// Builds running at once, over all tenants.
    permits: Arc<tokio::sync::Semaphore>,
}

impl Default for ScanIndexes {
    fn default() -> Self {
        Self {
            slots: Mutex::default(),
            epoch: AtomicU64::new(0),
            engine: std::sync::OnceLock::new(),
            permits: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_BUILDS)),
        }
    }
}

/// What a scan does about its tenant's automaton.
enum Next {
    /// Scan with this one (built at or after the generation needed).
    Use(Arc<ScanIndex>),
    /// Wait for the build under way to end, then look again.
    Wait(tokio::sync::watch::Receiver<u64>),
    /// Start a build (this call's task runs it), then look again.
    Start(tokio::sync::watch::Receiver<u64>),
}

impl ScanIndexes {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Slot>> {
        // The map holds whole values after any panic.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The generation a scan beginning now needs: the current one, after
    /// aging out an index older than `ttl` (notices are lossy).
    fn needed(&self, tenant: TenantId, ttl: Duration) -> u64 {
        let mut slots = self.slots();
        let slot = slots.entry(tenant).or_default();
        if slot
            .built
            .as_ref()
            .is_some_and(|b| b.generation == slot.generation && b.at.elapsed() >= ttl)
        {
            slot.generation += 1;
        }
        slot.generation
    }

    /// What a scan needing generation `need` does now; remembers `caller`
    /// as the tenant's builder.
    fn next(
        &self,
        tenant: TenantId,
        need: u64,
        ttl: Duration,
        caller: &Arc<Authenticated>,
    ) -> Result<(Next, bool)> {
        let mut slots = self.slots();
        if slots.len() >= MAX_INDEXED_TENANTS && !slots.contains_key(&tenant) {
            // Past the bound the memory starts afresh.
            self.epoch.fetch_add(1, Ordering::SeqCst);
            slots.clear();
        }
        let slot = slots.entry(tenant).or_default();
        slot.builder = Some((Arc::clone(caller), Instant::now()));
        if let Some(b) = &slot.built
            && b.generation >= need
        {
            // Refreshed ahead of its expiry while scans keep coming.
            let refresh = slot.building.is_none()
                && b.generation == slot.generation
                && b.at.elapsed() >= ttl / 2;
            if refresh {
                slot.building = Some(slot.generation);
            }
            return Ok((Next::Use(Arc::clone(&b.index)), refresh));
        }
        if let Some((generation, message)) = &slot.failed
            && *generation >= need
        {
            return Err(Error::Unavailable(
                format!("the tenant's values could not be indexed: {message}").into(),
            ));
        }
        let rx = slot.ended.subscribe();
        if slot.building.is_some() {
            return Ok((Next::Wait(rx), false));
        }
        slot.building = Some(slot.generation);
        Ok((Next::Start(rx), false))
    }

    /// The build that began at the slot's current generation, for a task
    /// that holds the build flag: the generation, the epoch and the
    /// builder.
    fn begin(&self, tenant: TenantId) -> Option<(u64, u64, Arc<Authenticated>)> {
        let mut slots = self.slots();
        let slot = slots.get_mut(&tenant)?;
        let builder = slot.builder.as_ref().map(|(b, _)| Arc::clone(b));
        let Some(builder) = builder else {
            slot.building = None;
            return None;
        };
        slot.building = Some(slot.generation);
        Some((slot.generation, self.epoch.load(Ordering::SeqCst), builder))
    }

    /// Ends a build begun at `generation` (in `epoch`): keeps its index (or
    /// its failure) and wakes the waiting scans. `true` if another build
    /// is due (a change came meanwhile and the tenant is still scanned).
    fn end(
        &self,
        tenant: TenantId,
        generation: u64,
        epoch: u64,
        at: Instant,
        result: std::result::Result<Arc<ScanIndex>, String>,
    ) -> bool {
        let mut slots = self.slots();
        if self.epoch.load(Ordering::SeqCst) != epoch {
            return false;
        }
        let Some(slot) = slots.get_mut(&tenant) else {
            return false;
        };
        match result {
            Ok(index) => {
                slot.built = Some(Built {
                    index,
                    at,
                    generation,
                });
                slot.failed = None;
            }
            Err(message) => slot.failed = Some((generation, message)),
        }
        slot.ended.send_modify(|n| *n += 1);
        let again = slot.generation > generation
            && slot.failed.is_none()
            && slot
                .builder
                .as_ref()
                .is_some_and(|(_, at)| at.elapsed() < ACTIVE);
        if again {
            slot.building = Some(slot.generation);
        } else {
            slot.building = None;
        }
        again
    }

    /// A change of the tenant's values: the automaton becomes stale; it is
    /// rebuilt in the background if the tenant was scanned lately, else
    /// dropped.
    pub(crate) fn invalidate(&self, tenant: TenantId) {
        let start = {
            let mut slots = self.slots();
            let Some(slot) = slots.get_mut(&tenant) else {
                return;
            };
            slot.generation += 1;
            let active = slot
                .builder
                .as_ref()
                .is_some_and(|(_, at)| at.elapsed() < ACTIVE);
            if !active {
                slot.built = None;
                slot.builder = None;
            }
            let start = active && slot.building.is_none();
            if start {
                slot.building = Some(slot.generation);
            }
            start
        };
        if start {
            self.spawn_build(tenant);
        }
    }

    /// Drops every automaton (changes may have been missed).
    pub(crate) fn invalidate_all(&self) {
        let mut slots = self.slots();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for slot in slots.values() {
            // Waiting scans look again (and build afresh).
            slot.ended.send_modify(|n| *n += 1);
        }
        slots.clear();
    }

    /// Runs the tenant's build (the caller set the build flag) on a task
    /// of its own; without an engine or a runtime, the flag is cleared.
    fn spawn_build(&self, tenant: TenantId) {
        let engine = self.engine.get().and_then(std::sync::Weak::upgrade);
        match (engine, tokio::runtime::Handle::try_current()) {
            (Some(engine), Ok(runtime)) => {
                runtime.spawn(async move { engine.run_scan_builds(tenant).await });
            }
            _ => {
                let mut slots = self.slots();
                if let Some(slot) = slots.get_mut(&tenant) {
                    slot.building = None;
                    slot.ended.send_modify(|n| *n += 1);
                }
            }
        }
    }
}

impl Engine {
    /// Scans `text` for the tenant's stored values the caller may read the
    /// metadata of, and for well-known token formats.
    ///
    /// RESOURCE_EXHAUSTED past the caller's scan rate limit; INVALID_ARGUMENT
    /// for a text over [`MAX_SCAN_TEXT_BYTES`]; UNAVAILABLE (and nothing
    /// returned) if its audit event is not durable in time.
    pub async fn scan_text(
        self: &Arc<Self>,
        caller: &Arc<Authenticated>,
        ctx: &CallContext,
        text: Zeroizing<String>,
        options: ScanOptions,
    ) -> Result<ScanReport> {
        // `text` is wiped when dropped on every path: a refusal, a failed
        // lookup, a panic of the search or a caller that goes away mid-call
        // (the search's task then drops it when it ends).
        let scope = caller.tenant_scope()?;
        let text_bytes = text.len() as u64;
        if text.len() > MAX_SCAN_TEXT_BYTES {
            return Err(Error::invalid(
                "text",
                format!("must be at most {MAX_SCAN_TEXT_BYTES} bytes"),
            ));
        }
        if let Err(refusal) = self.abuse().admit_scan(&scope, self.limits().scan_limit) {
            self.record_rate_limited(caller, ctx, "ScanText", &refusal)
                .await;
            return Err(Error::ResourceExhausted(
                format!(
                    "too many scans; retry in {} s",
                    refusal.retry_after.as_secs().max(1)
                )
                .into(),
            ));
        }
        let index = self.scan_index(caller, &scope).await?;
        let listing = self
            .listing(&scope, scope.principal(), Capability::ReadMetadata)
            .await?;

        let searched = Arc::clone(&index);
        let (text, matches, formats) = tokio::task::spawn_blocking(move || {
            let bytes = text.as_bytes();
            let spare = (bytes.len() >= FORMATS_BESIDE_FROM)
                .then(SpareThreads::take)
                .flatten();
            let (matches, formats) = if spare.is_some() {
                // The well-known formats on a thread of their own, beside
                // the stored values' search (itself on two threads for a
                // text this long): the call's latency is the longest of
                // them, not their sum.
                std::thread::scope(|s| {
                    let formats = s.spawn(|| strongroom_scan::detect_known_formats(bytes));
                    let matches = searched.known.find_on_two_threads(bytes);
                    let formats = formats
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                    (matches, formats)
                })
            } else {
                // Small, or as many scans on threads of their own as the
                // machine has cores already: one thread (more would only
                // share the same cores).
                (
                    searched.known.find(bytes),
                    strongroom_scan::detect_known_formats(bytes),
                )
            };
            drop(spare);
            (text, matches, formats)
        })
        .await
        .map_err(|e| Error::Internal(format!("scan task failed: {e}")))?;

        let mut visible: HashMap<usize, bool> = HashMap::new();
        let mut findings: Vec<ScanFinding> = Vec::with_capacity(matches.len() + formats.len());
        for m in matches {
            let (credential, version) = &index.versions[m.label];
            let shown = *visible.entry(m.label).or_insert_with(|| {
                (options.environments.is_empty()
                    || options.environments.contains(&credential.environment))
                    && listing.shows(credential)
            });
            if shown {
                findings.push(ScanFinding {
                    source: FindingSource::Stored {
                        credential: credential.id,
                        name: credential.name.clone(),
                        environment: credential.environment.clone(),
                        version: *version,
                        form: m.form,
                    },
                    start: m.start,
                    end: m.end,
                });
            }
        }
        let stored = findings.len() as u64;
        findings.extend(formats.into_iter().map(|f| ScanFinding {
            source: FindingSource::Format(f.rule),
            start: f.start,
            end: f.end,
        }));
        findings.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));

        let mut draft = self.draft(
            &scope,
            ctx,
            Action::ScanText,
            Outcome::Allowed,
            Reason::Allowed,
        );
        draft.detail = Some(AuditDetail::Scan {
            findings: findings.len() as u64,
            stored,
            text_bytes,
        });
        self.audit(&scope, draft).await?;
        // Redacted only once the call is sure to answer: a copy built before
        // an audit failure would be dropped unwiped.
        let redacted = options.redact.then(|| redact(&text, &findings));
        drop(text);
        Ok(ScanReport { findings, redacted })
    }

    /// The tenant's automaton as of this call: the kept one if no change
    /// came since it was built, else the one being built (waited for), or
    /// one built now. A change rebuilds it in the background (see
    /// [`ScanIndexes::invalidate`]).
    async fn scan_index(
        self: &Arc<Self>,
        caller: &Arc<Authenticated>,
        scope: &TenantScope<'_>,
    ) -> Result<Arc<ScanIndex>> {
        let tenant = scope.tenant_id();
        let ttl = self.limits().credential_cache_ttl;
        let indexes = self.caches.scan_indexes();
        indexes.engine.get_or_init(|| Arc::downgrade(self));
        let need = indexes.needed(tenant, ttl);
        loop {
            let (next, refresh) = indexes.next(tenant, need, ttl, caller)?;
            if refresh {
                indexes.spawn_build(tenant);
            }
            match next {
                Next::Use(index) => return Ok(index),
                Next::Wait(mut ended) => {
                    let _ = ended.changed().await;
                }
                Next::Start(mut ended) => {
                    indexes.spawn_build(tenant);
                    let _ = ended.changed().await;
                }
            }
        }
    }

    /// Builds the tenant's automaton, again while changes come in between,
    /// at most [`MAX_CONCURRENT_BUILDS`] tenants at once. The caller set the
    /// tenant's build flag.
    async fn run_scan_builds(self: Arc<Self>, tenant: TenantId) {
        let indexes = self.caches.scan_indexes();
        let Ok(_permit) = Arc::clone(&indexes.permits).acquire_owned().await else {
            return;
        };
        loop {
            let Some((generation, epoch, builder)) = indexes.begin(tenant) else {
                return;
            };
            let at = Instant::now();
            let result = match builder.tenant_scope() {
                Ok(scope) => self
                    .build_scan_index(&scope)
                    .await
                    .map(Arc::new)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(message) = &result {
                tracing::warn!(tenant = %tenant, error = %message, "could not index a tenant's values for scans");
            }
            if !indexes.end(tenant, generation, epoch, at, result) {
                return;
            }
        }
    }

    /// Reads and opens every kept version of every credential of the tenant
    /// and compiles their secret parts.
    async fn build_scan_index(&self, scope: &TenantScope<'_>) -> Result<ScanIndex> {
        let began = Instant::now();
        let mut credentials = Vec::new();
        let mut page = PageRequest {
            size: MAX_PAGE_SIZE,
            after: None,
        };
        loop {
            let listed = self
                .store
                .list_credentials(scope, &CredentialFilter::default(), &page)
                .await?;
            credentials.extend(listed.items);
            match listed.next {
                Some(next) => page.after = Some(next),
                None => break,
            }
        }
        let mut versions: Vec<(Arc<Credential>, u32)> = Vec::new();
        let mut values: Vec<(usize, Zeroizing<Vec<u8>>)> = Vec::new();
        for credential in credentials {
            if credential.destroyed_at.is_some() {
                continue;
            }
            let credential = Arc::new(credential);
            for stored in self.store.list_versions(scope, credential.id).await? {
                if stored.envelope.is_none() {
                    continue;
                }
                let value = self.open(scope, &credential, &stored).await?;
                let label = versions.len();
                versions.push((Arc::clone(&credential), stored.version));
                values.extend(
                    value
                        .secrets()
                        .into_iter()
                        .map(|s| (label, Zeroizing::new(s.as_bytes().to_vec()))),
                );
            }
        }
        let read = began.elapsed();
        let count = values.len();
        let known = tokio::task::spawn_blocking(move || {
            KnownValues::new(
                values.iter().map(|(label, v)| (*label, v.as_slice())),
                MIN_SCAN_VALUE_BYTES,
            )
        })
        .await
        .map_err(|e| Error::Internal(format!("scan index task failed: {e}")))?
        .map_err(|e| Error::Internal(e.to_string()))?;
        tracing::info!(
            tenant = %scope.tenant_id(),
            values = count,
            read_ms = read.as_millis() as u64,
            compile_ms = (began.elapsed() - read).as_millis() as u64,
            bytes = known.memory_usage(),
            "indexed a tenant's values for scans"
        );
        Ok(ScanIndex { known, versions })
    }
}

/// `text` with each finding replaced by `[REDACTED:name]`; overlapping
/// findings are replaced as one, named by the first.
fn redact(text: &str, findings: &[ScanFinding]) -> String {
    const OPEN: &[u8] = b"[REDACTED:";
    let bytes = text.as_bytes();
    // Room for every replacement up front: a buffer that grew would leave
    // the part copied so far in the allocation it left, unwiped.
    let room = findings
        .iter()
        .map(|f| OPEN.len() + f.source.label().len() + 1)
        .sum::<usize>();
    let mut out = Vec::with_capacity(bytes.len() + room);
    let mut at = 0;
    let mut i = 0;
    while i < findings.len() {
        let first = &findings[i];
        let mut end = first.end;
        i += 1;
        while i < findings.len() && findings[i].start < end {
            end = end.max(findings[i].end);
            i += 1;
        }
        let start = first.start.max(at);
        out.extend_from_slice(&bytes[at..start]);
        out.extend_from_slice(OPEN);
        out.extend_from_slice(first.source.label().as_bytes());
        out.push(b']');
        at = end.max(at);
    }
    out.extend_from_slice(&bytes[at..]);
    // Findings start and end on character boundaries (values are text, the
    // encodings and formats are ASCII); a cut character would be replaced.
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => {
            let cut = Zeroizing::new(e.into_bytes());
            String::from_utf8_lossy(&cut).into_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(rule: Rule, start: usize, end: usize) -> ScanFinding {
        ScanFinding {
            source: FindingSource::Format(rule),
            start,
            end,
        }
    }

    #[test]
    fn overlapping_findings_are_redacted_as_one() {
        let text = "0123456789abcdef";
        let out = redact(
            text,
            &[
                finding(Rule::Jwt, 2, 6),
                finding(Rule::GithubToken, 4, 9),
                finding(Rule::StripeKey, 12, 14),
            ],
        );
        assert_eq!(out, "01[REDACTED:jwt]9ab[REDACTED:stripe_key]ef");
    }

    #[test]
    fn redaction_writes_into_one_buffer_that_never_grows() {
        // Each one-byte finding becomes a placeholder far longer than it: a
        // buffer sized to the text would have grown (and left copies of
        // the text behind) many times over.
        let text = "abcdefghijklmnopqrstuvwxyz";
        let findings: Vec<ScanFinding> = (0..text.len())
            .step_by(2)
            .map(|i| finding(Rule::GithubToken, i, i + 1))
            .collect();
        let out = redact(text, &findings);
        let room = findings.len() * "[REDACTED:github_token]".len();
        assert!(out.starts_with("[REDACTED:github_token]b[REDACTED:github_token]d"));
        assert_eq!(
            out.capacity(),
            text.len() + room,
            "the buffer was reallocated"
        );
    }

    #[test]
    fn no_more_scans_take_threads_of_their_own_than_there_are_cores() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        // No other test of this crate scans 256 KiB, the only taker.
        let taken: Vec<SpareThreads> = std::iter::from_fn(SpareThreads::take)
            .take(cores + 1)
            .collect();
        assert_eq!(taken.len(), cores);
        assert!(SpareThreads::take().is_none());
        drop(taken);
        assert!(SpareThreads::take().is_some(), "released when dropped");
    }
}
