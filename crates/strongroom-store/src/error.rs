//! Mapping of database errors to the core's codes, the same for both
//! backends. Details stay in the server log; the caller sees the code.

use strongroom_core::Error;

/// Maps a sqlx error met while working on `what` (`"credential"`).
pub(crate) fn db(what: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |e| match &e {
        sqlx::Error::RowNotFound => Error::not_found(what),
        sqlx::Error::Database(d) if d.is_unique_violation() => Error::already_exists(what),
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
            Error::not_found(format!("a record {what} refers to"))
        }
        sqlx::Error::Database(d) if connection_gone_code(d.code()) => {
            tracing::warn!(error = %e, "database unavailable");
            Error::Unavailable("the database is unavailable".into())
        }
        // lock_timeout (55P03) or statement_timeout (57014, class 57
        // above): the database is too slow to answer now.
        sqlx::Error::Database(d) if d.code().as_deref() == Some("55P03") => {
            tracing::warn!(error = %e, "database too slow: a lock was not granted in time");
            Error::Unavailable("the database is unavailable".into())
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => {
            tracing::warn!(error = %e, "database unavailable");
            Error::Unavailable("the database is unavailable".into())
        }
        _ => Error::internal(format!("database error on {what}: {e}")),
    }
}

/// Whether `e` says the connection is gone before the statement ran: closed
/// under us (I/O, protocol), or the server's farewell on it (SQLSTATE class
/// 57P: shutdown, a terminated backend, not accepting connections).
pub(crate) fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => connection_lost_code(d.code()),
        _ => false,
    }
}

/// Whether a SQLSTATE says the connection or the server went away: an
/// operator intervention (class 57P) or a connection exception (class 08).
pub(crate) fn connection_gone_code(code: Option<std::borrow::Cow<'_, str>>) -> bool {
    code.is_some_and(|c| c.starts_with("57P") || c.starts_with("08"))
}

/// Whether a SQLSTATE is the server's farewell on a connection (class 57P).
pub(crate) fn connection_lost_code(code: Option<std::borrow::Cow<'_, str>>) -> bool {
    code.is_some_and(|c| c.starts_with("57P"))
}

/// Whether `e` is a foreign-key violation (a row still referenced).
pub(crate) fn is_fk(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

/// Parses a page cursor holding a UUID.
pub(crate) fn uuid_cursor(after: Option<&String>) -> Result<uuid::Uuid, Error> {
    match after {
        None => Ok(uuid::Uuid::nil()),
        Some(text) => uuid::Uuid::parse_str(text)
            .map_err(|_| Error::invalid("page_token", "is not a valid page token")),
    }
}

/// Whether `e` is a unique-key violation.
pub(crate) fn is_unique(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}
