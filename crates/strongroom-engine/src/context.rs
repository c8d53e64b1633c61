//! What the engine knows of the call it serves, recorded in audit events.

use strongroom_core::audit::AuditDraft;

/// Facts about the call, recorded in audit events.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// Caller's network address.
    pub peer: Option<String>,
    /// The request id (from `x-request-id`, or generated).
    pub request_id: String,
    /// Trace id, when tracing is on.
    pub trace_id: Option<String>,
}

impl CallContext {
    /// `draft` with this call's facts.
    pub(crate) fn stamp(&self, mut draft: AuditDraft) -> AuditDraft {
        draft.peer.clone_from(&self.peer);
        draft.request_id = Some(self.request_id.clone());
        draft.trace_id.clone_from(&self.trace_id);
        draft
    }
}

/// Makes a unique request id when the caller sent none.
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
