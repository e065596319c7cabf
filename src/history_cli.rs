//! `kz-groups history --account ID [--group ID] [--since TIME]`: a group's or an account's
//! history, newest first, one JSON entry a line (as `GET …/history/{ENTRY}` gives each, version
//! included). Reads only.
use serde_json::Value;

use crate::domain::history::{Entry, EntryId};
use crate::domain::ids::{AccountId, DocId};
use crate::store::history::{AccountRange, History};

/// Entries read per call.
const CHUNK: usize = 500;

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// The account (32 lower-case hex).
    #[arg(long, value_name = "ACCOUNT_ID")]
    pub account: String,
    /// Only this group's entries.
    #[arg(long, value_name = "GROUP_ID")]
    pub group: Option<String>,
    /// Only changes at or after TIME: Gregorian seconds (Kazoo's `pvt_modified` clock) or
    /// `YYYY-MM-DDTHH:MM:SSZ`.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
}

/// The checked arguments.
pub struct HistoryQuery {
    pub account: AccountId,
    pub group: Option<DocId>,
    /// Gregorian seconds.
    pub since: i64,
}

impl HistoryArgs {
    pub fn parse(self) -> Result<HistoryQuery, String> {
        let account = AccountId::parse(&self.account)
            .map_err(|_| format!("--account {:?} is no account id", self.account))?;
        let group = match self.group {
            Some(raw) => Some(DocId::parse(&raw).ok_or(format!("--group {raw:?} is no group id"))?),
            None => None,
        };
        let since = match self.since {
            Some(raw) => parse_time(&raw).ok_or(format!(
                "--since {raw:?}: Gregorian seconds or YYYY-MM-DDTHH:MM:SSZ"
            ))?,
            None => 0,
        };
        Ok(HistoryQuery {
            account,
            group,
            since,
        })
    }
}

/// Gregorian seconds, or a UTC time `YYYY-MM-DDTHH:MM:SSZ`.
pub fn parse_time(raw: &str) -> Option<i64> {
    if let Ok(seconds) = raw.parse::<i64>() {
        return Some(seconds);
    }
    let b = raw.as_bytes();
    let shape = b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z';
    if !shape {
        return None;
    }
    let n = |r: std::ops::Range<usize>| raw.get(r)?.parse::<u32>().ok();
    let month = time::Month::try_from(n(5..7)? as u8).ok()?;
    let date = time::Date::from_calendar_date(n(0..4)? as i32, month, n(8..10)? as u8).ok()?;
    let at = date
        .with_hms(n(11..13)? as u8, n(14..16)? as u8, n(17..19)? as u8)
        .ok()?
        .assume_utc();
    Some(at.unix_timestamp() + crate::domain::clock::GREGORIAN_OFFSET)
}

/// Prints the entries, newest first, one a line; returns how many.
pub async fn print(history: &History, query: &HistoryQuery) -> Result<usize, String> {
    let fail = |e: crate::store::StoreError| format!("reading the history: {e}");
    let mut printed = 0;
    let mut emit = |entry: &Entry| {
        println!("{}", serde_json::to_value(entry).unwrap_or(Value::Null));
        printed += 1;
    };
    match &query.group {
        Some(group) => {
            let mut start: Option<EntryId> = None;
            loop {
                let mut page = history
                    .group(&query.account, group, start.as_ref(), CHUNK + 1)
                    .await
                    .map_err(fail)?;
                let next = (page.len() > CHUNK).then(|| page.pop()).flatten();
                for entry in page.iter().take_while(|e| e.timestamp >= query.since) {
                    emit(entry);
                }
                match next {
                    Some(n) if n.timestamp >= query.since => start = Some(n.id),
                    _ => break,
                }
            }
        }
        None => {
            let mut range = AccountRange {
                upper: "\u{fff0}".into(),
                lower: format!("{:012}:", query.since.max(0)),
                limit: CHUNK + 1,
            };
            loop {
                let mut page = history
                    .account(&query.account, &range)
                    .await
                    .map_err(fail)?;
                let next = (page.len() > CHUNK).then(|| page.pop()).flatten();
                for (_, entry) in &page {
                    emit(entry);
                }
                match next {
                    Some((key, _)) => range.upper = key,
                    None => break,
                }
            }
        }
    }
    Ok(printed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_gregorian_seconds_or_utc() {
        assert_eq!(parse_time("63900000000"), Some(63_900_000_000));
        assert_eq!(
            parse_time("1970-01-01T00:00:00Z"),
            Some(crate::domain::clock::GREGORIAN_OFFSET)
        );
        assert_eq!(
            parse_time("2026-12-07T16:00:00Z"),
            Some(1_796_659_200 + crate::domain::clock::GREGORIAN_OFFSET)
        );
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2026-13-07T16:00:00Z"), None);
    }
}
