//! Keyset pagination, the one way every listing pages: a page reads one row more than it
//! returns, and when that row exists the cursor names the last row returned, so the next page
//! seeks past it in the listing's index instead of counting an offset (stable while rows are
//! added, and as cheap on the last page as on the first). A cursor starts with a tag that
//! names its listing (and order), so one made by another listing is refused, not misread.

use base64::Engine as _;

use crate::error::{Error, Result};

/// `?limit=` when none is given.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `?limit=`.
pub const MAX_LIMIT: usize = 1000;

/// A `?limit=` outside `1..=MAX_LIMIT`.
#[derive(Debug, thiserror::Error)]
#[error("limit must be between 1 and {MAX_LIMIT}, got {0}")]
pub struct BadLimit(pub usize);

/// The page size asked for: [`DEFAULT_LIMIT`] without one, refused outside `1..=MAX_LIMIT`.
pub fn limit(asked: Option<usize>) -> std::result::Result<usize, BadLimit> {
    match asked {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(BadLimit(n)),
    }
}

/// The rows to read for a page of `limit`: one more, whose presence says a next page exists.
pub fn take(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1)
}

/// Cuts `rows` (read with [`take`]) to `limit`; when there were more, the cursor that `cursor`
/// makes of the last row kept.
pub fn next_cursor<T>(
    rows: &mut Vec<T>,
    limit: usize,
    cursor: impl FnOnce(&T) -> String,
) -> Option<String> {
    if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(cursor)
    } else {
        None
    }
}

/// [`next_cursor`] for rows read as `(key, item)`, the key being what the cursor holds but
/// not what the page shows: the page's items and the cursor made of the last kept key.
pub fn keyed_page<K, T>(
    mut rows: Vec<(K, T)>,
    limit: usize,
    cursor: impl FnOnce(&K) -> String,
) -> (Vec<T>, Option<String>) {
    let next = next_cursor(&mut rows, limit, |(k, _)| cursor(k));
    (rows.into_iter().map(|(_, t)| t).collect(), next)
}

fn invalid(hint: &str) -> Error {
    Error::Invalid(format!(
        "invalid cursor: pass next_cursor from the previous page unchanged{hint}"
    ))
}

/// The cursor `<tag><n>` of a listing ordered by an integer (a sequence number, a rowid).
pub fn seq_cursor(tag: char, n: i64) -> String {
    format!("{tag}{n}")
}

/// The integer of a [`seq_cursor`] with `tag`, to continue below (or above); `None` for the
/// first page.
pub fn parse_seq_cursor(cursor: Option<&str>, tag: char) -> Result<Option<i64>> {
    cursor
        .map(|c| {
            c.strip_prefix(tag)
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or_else(|| invalid(""))
        })
        .transpose()
}

/// The cursor `<tag><hex of key>` of a listing in key order (hex keeps any key URL-safe).
pub fn key_cursor(tag: char, key: &str) -> String {
    format!("{tag}{}", hex::encode(key.as_bytes()))
}

/// The key of a [`key_cursor`] with `tag`.
pub fn parse_key_cursor(cursor: &str, tag: char) -> Result<String> {
    cursor
        .strip_prefix(tag)
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| invalid(""))
}

/// The cursor of a listing ordered by `(n, text)` (a sort key, then a path), the order named
/// by `tag`: base64url of `<tag><n>:<text>`, URL-safe whatever the text holds.
pub fn pair_cursor(tag: char, n: i64, text: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{tag}{n}:{text}"))
}

/// The `(n, text)` of a [`pair_cursor`] made for the order `tag`; one of another order is
/// refused with a message that says to keep the same sort.
pub fn parse_pair_cursor(cursor: &str, tag: char) -> Result<(i64, String)> {
    let bad = || invalid(", with the same sort");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor.as_bytes())
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let rest = text.strip_prefix(tag).ok_or_else(bad)?;
    let (n, text) = rest.split_once(':').ok_or_else(bad)?;
    Ok((n.parse().map_err(|_| bad())?, text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(e: Error) -> String {
        match e {
            Error::Invalid(m) => m,
            other => panic!("not Invalid: {other:?}"),
        }
    }

    #[test]
    fn the_limit_defaults_to_100_and_stays_within_1_to_1000() {
        assert_eq!(limit(None).unwrap(), 100);
        assert_eq!(limit(Some(1)).unwrap(), 1);
        assert_eq!(limit(Some(1000)).unwrap(), 1000);
        assert_eq!(
            limit(Some(0)).unwrap_err().to_string(),
            "limit must be between 1 and 1000, got 0"
        );
        assert!(limit(Some(1001)).is_err());
    }

    #[test]
    fn a_page_reads_one_more_row_and_names_the_last_it_keeps() {
        assert_eq!(take(2), 3);
        let mut rows = vec![5, 4, 3];
        assert_eq!(
            next_cursor(&mut rows, 2, |n| seq_cursor('e', *n)),
            Some("e4".into())
        );
        assert_eq!(rows, [5, 4]);
        let mut last = vec![2, 1];
        assert_eq!(next_cursor(&mut last, 2, |n| seq_cursor('e', *n)), None);
        assert_eq!(last, [2, 1]);
        let keyed = vec![(9, "c"), (8, "b"), (7, "a")];
        assert_eq!(
            keyed_page(keyed, 2, |k| seq_cursor('p', *k)),
            (vec!["c", "b"], Some("p8".into()))
        );
    }

    #[test]
    fn seq_cursors_round_trip_and_belong_to_their_listing() {
        assert_eq!(parse_seq_cursor(None, 'a').unwrap(), None);
        assert_eq!(
            parse_seq_cursor(Some(&seq_cursor('a', 42)), 'a').unwrap(),
            Some(42)
        );
        assert_eq!(
            message(parse_seq_cursor(Some("e42"), 'a').unwrap_err()),
            "invalid cursor: pass next_cursor from the previous page unchanged"
        );
        assert!(parse_seq_cursor(Some("azz"), 'a').is_err());
    }

    #[test]
    fn key_cursors_round_trip_any_key() {
        let c = key_cursor('k', "a/b c?");
        assert_eq!(c, "k612f6220633f");
        assert_eq!(parse_key_cursor(&c, 'k').unwrap(), "a/b c?");
        assert!(parse_key_cursor("kzz", 'k').is_err());
        assert!(parse_key_cursor(&c, 'x').is_err());
    }

    #[test]
    fn pair_cursors_round_trip_and_belong_to_their_order() {
        let c = pair_cursor('s', 42, "a/b:c");
        assert_eq!(parse_pair_cursor(&c, 's').unwrap(), (42, "a/b:c".into()));
        assert_eq!(
            message(parse_pair_cursor(&c, 'n').unwrap_err()),
            "invalid cursor: pass next_cursor from the previous page unchanged, with the same sort"
        );
        assert!(parse_pair_cursor("!!", 'n').is_err());
    }
}
