//! Leak scanning (`ScanText`): a text searched for the tenant's stored
//! values, in every encoded form, and for well-known token formats.
//!
//! The known values of a tenant (every secret part of every version still
//! kept, not destroyed, of every credential) are compiled into one automaton
//! ([`strongroom_scan::KnownValues`]) the first time a scan needs them, and
//! reused by every scan of the tenant until a credential of the tenant
//! changes: [`Engine::commit`] and other servers' change notices drop it
//! through `Caches::apply`, and, notices being lossy, it is trusted for at
//! most `cache.credential_ttl_ms`. It is the one thing the engine keeps in
//! memory that is derived from plaintext beyond a call; the copies made while
//! building it are wiped.
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
use std::sync::atomic::{AtomicU64, Ordering};
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

/// A tenant's automaton, or the generation a fill must match to store one.
#[derive(Default)]
struct Slot {
    generation: u64,
    built: Option<(Arc<ScanIndex>, Instant)>,
}

/// The automata of the tenants scanned lately; dropped per tenant by the
/// changes that make them stale (see `Caches::apply`).
#[derive(Default)]
pub(crate) struct ScanIndexes {
    slots: Mutex<HashMap<TenantId, Slot>>,
    /// Bumped when every automaton is dropped, so a fill that started before
    /// stores nothing.
    epoch: AtomicU64,
}

/// The generations a fill started at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanTicket {
    epoch: u64,
    generation: u64,
}

impl ScanIndexes {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Slot>> {
        // The map holds whole values after any panic.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, tenant: TenantId, ttl: Duration) -> Option<Arc<ScanIndex>> {
        let slots = self.slots();
        let (index, at) = slots.get(&tenant)?.built.as_ref()?;
        (at.elapsed() < ttl).then(|| Arc::clone(index))
    }

    fn ticket(&self, tenant: TenantId) -> ScanTicket {
        let slots = self.slots();
        ScanTicket {
            epoch: self.epoch.load(Ordering::SeqCst),
            generation: slots.get(&tenant).map_or(0, |s| s.generation),
        }
    }

    /// Keeps `index`, built from what was read after `ticket` was taken at
    /// `at`, unless a change came since.
    fn put(&self, tenant: TenantId, ticket: ScanTicket, index: Arc<ScanIndex>, at: Instant) {
        let mut slots = self.slots();
        if self.epoch.load(Ordering::SeqCst) != ticket.epoch {
            return;
        }
        if slots.len() >= MAX_INDEXED_TENANTS && !slots.contains_key(&tenant) {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            slots.clear();
            return;
        }
        let slot = slots.entry(tenant).or_default();
        if slot.generation == ticket.generation {
            slot.built = Some((index, at));
        }
    }

    /// Drops the tenant's automaton (a credential changed).
    pub(crate) fn invalidate(&self, tenant: TenantId) {
        let mut slots = self.slots();
        let slot = slots.entry(tenant).or_default();
        slot.generation += 1;
        slot.built = None;
    }

    /// Drops every automaton (changes may have been missed).
    pub(crate) fn invalidate_all(&self) {
        let mut slots = self.slots();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        slots.clear();
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
        &self,
        caller: &Arc<Authenticated>,
        ctx: &CallContext,
        text: String,
        options: ScanOptions,
    ) -> Result<ScanReport> {
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
        let index = self.scan_index(&scope).await?;
        let listing = self
            .listing(&scope, scope.principal(), Capability::ReadMetadata)
            .await?;

        let searched = Arc::clone(&index);
        let (text, matches, formats) = tokio::task::spawn_blocking(move || {
            let matches = searched.known.find(text.as_bytes());
            let formats = strongroom_scan::detect_known_formats(text.as_bytes());
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
        let redacted = options.redact.then(|| redact(&text, &findings));
        drop(Zeroizing::new(text.into_bytes()));

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
        Ok(ScanReport { findings, redacted })
    }

    /// The tenant's automaton, built if none is kept.
    async fn scan_index(&self, scope: &TenantScope<'_>) -> Result<Arc<ScanIndex>> {
        let tenant = scope.tenant_id();
        let ttl = self.limits().credential_cache_ttl;
        let indexes = self.caches.scan_indexes();
        if let Some(index) = indexes.get(tenant, ttl) {
            return Ok(index);
        }
        let ticket = indexes.ticket(tenant);
        let at = Instant::now();
        let index = Arc::new(self.build_scan_index(scope).await?);
        indexes.put(tenant, ticket, Arc::clone(&index), at);
        Ok(index)
    }

    /// Reads and opens every kept version of every credential of the tenant
    /// and compiles their secret parts.
    async fn build_scan_index(&self, scope: &TenantScope<'_>) -> Result<ScanIndex> {
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
        let known = tokio::task::spawn_blocking(move || {
            KnownValues::new(
                values.iter().map(|(label, v)| (*label, v.as_slice())),
                MIN_SCAN_VALUE_BYTES,
            )
        })
        .await
        .map_err(|e| Error::Internal(format!("scan index task failed: {e}")))?
        .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(ScanIndex { known, versions })
    }
}

/// `text` with each finding replaced by `[REDACTED:name]`; overlapping
/// findings are replaced as one, named by the first.
fn redact(text: &str, findings: &[ScanFinding]) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
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
        out.extend_from_slice(b"[REDACTED:");
        out.extend_from_slice(first.source.label().as_bytes());
        out.push(b']');
        at = end.max(at);
    }
    out.extend_from_slice(&bytes[at..]);
    // Findings start and end on character boundaries (values are text, the
    // encodings and formats are ASCII); a cut character would be replaced.
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
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
}
