//! Pagination: a page size and an opaque token that continues after the last
//! item of the previous page. Tokens are only cursors; they are always applied
//! inside the caller's tenant scope, so a token from another tenant reveals
//! nothing.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{Error, Result};

/// Default page size.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest page size.
pub const MAX_PAGE_SIZE: u32 = 500;

/// Which page to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Items per page, 1 to [`MAX_PAGE_SIZE`].
    pub size: u32,
    /// Continue after this cursor (decoded from a page token).
    pub after: Option<String>,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            size: DEFAULT_PAGE_SIZE,
            after: None,
        }
    }
}

impl PageRequest {
    /// Parses a request's `page_size` (0 means the default) and `page_token`
    /// (empty means the first page).
    pub fn parse(page_size: u32, page_token: &str) -> Result<Self> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n > MAX_PAGE_SIZE => {
                return Err(Error::invalid("page_size", "must be at most 500"));
            }
            n => n,
        };
        let after = if page_token.is_empty() {
            None
        } else {
            let bytes = URL_SAFE_NO_PAD
                .decode(page_token)
                .map_err(|_| Error::invalid("page_token", "is not a valid page token"))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| Error::invalid("page_token", "is not a valid page token"))?;
            let cursor = text
                .strip_prefix("v1:")
                .ok_or_else(|| Error::invalid("page_token", "is not a valid page token"))?;
            Some(cursor.to_owned())
        };
        Ok(Self { size, after })
    }

    /// The first page of `size` items.
    pub fn first(size: u32) -> Self {
        Self { size, after: None }
    }

    /// The number of rows to fetch: one more than the page, to learn whether
    /// another page follows.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.size) + 1
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Cursor of the next page, if any.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `size + 1` fetched rows: if there is an extra
    /// row it is dropped and `cursor` of the last kept item becomes `next`.
    pub fn from_rows(mut rows: Vec<T>, size: u32, cursor: impl Fn(&T) -> String) -> Self {
        let size = size as usize;
        let next = if rows.len() > size {
            rows.truncate(size);
            rows.last().map(cursor)
        } else {
            None
        };
        Self { items: rows, next }
    }

    /// Keeps the items `keep` accepts. A token naming a dropped item would
    /// tell the caller about it: when any is dropped, the next page starts
    /// after the last kept item (`cursor`), or, with none kept, the listing
    /// ends here. Callers filter in the query first, so that this only
    /// catches what changed in between.
    pub fn retain(&mut self, keep: impl FnMut(&T) -> bool, cursor: impl Fn(&T) -> String) {
        let before = self.items.len();
        self.items.retain(keep);
        if self.items.len() < before && self.next.is_some() {
            self.next = self.items.last().map(cursor);
        }
    }

    /// The opaque token for the next page (empty when none).
    pub fn next_token(&self) -> String {
        self.next
            .as_ref()
            .map(|c| URL_SAFE_NO_PAD.encode(format!("v1:{c}")))
            .unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dropped_items_never_become_the_cursor() {
        let mut page = Page::from_rows(vec![1, 2, 3, 4], 3, |n| n.to_string());
        assert_eq!(page.next.as_deref(), Some("3"));
        page.retain(|n| *n != 3, |n| n.to_string());
        assert_eq!(page.next.as_deref(), Some("2"));
        page.retain(|_| false, |n| n.to_string());
        assert_eq!(page.next, None);
        let mut last = Page::from_rows(vec![1, 2], 3, |n| n.to_string());
        last.retain(|n| *n == 1, |n| n.to_string());
        assert_eq!(last.next, None);
    }

    #[test]
    fn tokens_roundtrip() {
        let page = Page::from_rows(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!(page.items, vec![1, 2]);
        let req = PageRequest::parse(2, &page.next_token()).unwrap();
        assert_eq!(req.after.as_deref(), Some("2"));
        assert!(PageRequest::parse(0, "garbage!").is_err());
        assert!(PageRequest::parse(501, "").is_err());
        assert_eq!(
            Page::from_rows(vec![1], 2, |n| n.to_string()).next_token(),
            ""
        );
    }
}
