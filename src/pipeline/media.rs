//! Stage 7, content negotiation (csv-and-chunked.md §1): Crossbar's default providers, JSON
//! first, then CSV, matched against `Accept` as Cowboy does; then, when JSON was chosen, the
//! `accept` request value may still ask for CSV (`api_resource:to_json/2`).
use serde_json::Value;

use crate::envelope::RequestEnvelope;

/// How an answer is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rendering {
    #[default]
    Json,
    Csv,
}

/// `?CONTENT_PROVIDED` (`crossbar.hrl`), in order: `to_json`, then `to_csv`.
const PROVIDED: [(&str, &str, Rendering); 5] = [
    ("application", "json", Rendering::Json),
    ("application", "x-json", Rendering::Json),
    ("application", "octet-stream", Rendering::Csv),
    ("text", "csv", Rendering::Csv),
    ("text", "comma-separated-values", Rendering::Csv),
];

struct Accepted {
    kind: String,
    sub: String,
    quality: f32,
    /// Media-type parameters other than `q`: the provided types have none, so Cowboy never
    /// matches such an entry (kz-groups has always been lenient with JSON's).
    has_params: bool,
}

fn parse(accept: &str) -> Vec<Accepted> {
    accept
        .split(',')
        .filter_map(|item| {
            let mut parts = item.split(';');
            let mime = parts.next()?.trim().to_ascii_lowercase();
            let (kind, sub) = mime.split_once('/')?;
            let mut quality = 1.0;
            let mut has_params = false;
            for p in parts {
                let p = p.trim();
                match p.strip_prefix("q=") {
                    Some(q) => {
                        quality = q.trim().parse().unwrap_or(1.0);
                        // What follows `q` is accept-extension, not media-type parameters.
                        break;
                    }
                    None if !p.is_empty() => has_params = true,
                    None => {}
                }
            }
            Some(Accepted {
                kind: kind.trim().to_owned(),
                sub: sub.trim().to_owned(),
                quality,
                has_params,
            })
        })
        .collect()
}

/// Cowboy's `prioritize_accept`: higher quality first, then the more specific type.
fn specificity(a: &Accepted) -> u8 {
    match (a.kind.as_str(), a.sub.as_str()) {
        ("*", _) => 0,
        (_, "*") => 1,
        _ => 2,
    }
}

/// The rendering `Accept` chooses, or `None`: nothing acceptable (a bare 406). An entry with
/// `q=0` is refused.
pub fn choose(accept: Option<&str>) -> Option<Rendering> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(Rendering::Json);
    };
    let mut entries: Vec<Accepted> = parse(accept)
        .into_iter()
        .filter(|a| a.quality > 0.0)
        .collect();
    entries.sort_by(|a, b| {
        b.quality
            .total_cmp(&a.quality)
            .then(specificity(b).cmp(&specificity(a)))
    });
    entries.iter().find_map(|a| {
        PROVIDED.iter().find_map(|(kind, sub, rendering)| {
            let matches = (a.kind == "*" && a.sub == "*")
                || (a.kind == *kind && (a.sub == *sub || a.sub == "*"));
            let params_ok = !a.has_params || *rendering == Rendering::Json;
            (matches && params_ok).then_some(*rendering)
        })
    })
}

/// `api_resource:accept_override/1`, read only when JSON was chosen: `csv` exactly, or a
/// `type/subtype` (subtype `*` allowed) whose first matching provider is CSV's.
pub fn accept_override(env: &RequestEnvelope) -> Rendering {
    let value = env.req_value("accept");
    let Some(Value::String(accept)) = value.as_deref() else {
        return Rendering::Json;
    };
    if accept == "csv" {
        return Rendering::Csv;
    }
    let Some((kind, sub)) = accept.split_once('/') else {
        return Rendering::Json;
    };
    PROVIDED
        .iter()
        .find(|(k, s, _)| *k == kind && (*s == sub || sub == "*"))
        .map_or(Rendering::Json, |(_, _, rendering)| *rendering)
}

/// The file name a CSV answer goes by (see `csv::file_name`), or `None`: the answer is JSON.
pub fn csv_answer(
    rendering: Rendering,
    env: &RequestEnvelope,
    x_file_name: Option<&str>,
) -> Option<String> {
    if rendering == Rendering::Json && accept_override(env) == Rendering::Json {
        return None;
    }
    let requested = env.req_value("file_name");
    let requested = requested.as_deref().and_then(Value::as_str);
    Some(crate::csv::file_name(x_file_name, requested))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_stays_the_default_and_csv_is_offered() {
        assert_eq!(choose(None), Some(Rendering::Json));
        assert_eq!(choose(Some("*/*")), Some(Rendering::Json));
        assert_eq!(choose(Some("application/json")), Some(Rendering::Json));
        assert_eq!(choose(Some("application/*")), Some(Rendering::Json));
        assert_eq!(choose(Some("text/html, */*;q=0.8")), Some(Rendering::Json));
        for csv in [
            "text/csv",
            "text/*",
            "application/octet-stream",
            "text/comma-separated-values",
            "text/csv;q=0.5",
        ] {
            assert_eq!(choose(Some(csv)), Some(Rendering::Csv), "{csv}");
        }
        // The more specific wins at equal quality, the higher quality first.
        assert_eq!(choose(Some("*/*, text/csv")), Some(Rendering::Csv));
        assert_eq!(
            choose(Some("text/csv;q=0.5, application/json")),
            Some(Rendering::Json)
        );
    }

    #[test]
    fn nothing_acceptable_is_refused() {
        assert_eq!(choose(Some("text/html")), None);
        assert_eq!(choose(Some("application/json;q=0")), None);
        // A media-type parameter never matches Crossbar's CSV types.
        assert_eq!(choose(Some("text/csv; charset=utf-8")), None);
    }

    #[test]
    fn the_accept_value_overrides_json() {
        let env = |qs: &str| RequestEnvelope::parse(None, b"", qs).unwrap();
        assert_eq!(accept_override(&env("accept=csv")), Rendering::Csv);
        assert_eq!(accept_override(&env("accept=text/csv")), Rendering::Csv);
        assert_eq!(accept_override(&env("accept=text/*")), Rendering::Csv);
        assert_eq!(
            accept_override(&env("accept=application/octet-stream")),
            Rendering::Csv
        );
        assert_eq!(accept_override(&env("accept=CSV")), Rendering::Json);
        assert_eq!(accept_override(&env("accept=pdf")), Rendering::Json);
        assert_eq!(accept_override(&env("")), Rendering::Json);
    }
}
