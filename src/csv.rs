//! Crossbar's CSV rendering of JSON objects, byte for byte as Kazoo's `kz_csv` writes them
//! (csv-and-chunked.md §2.4; the same code on 4.3 and master): every object flattened, columns
//! in the order first seen, each row with the columns known once it was read (earlier rows are
//! never padded), and the header row, relabelled by `?CSV_HEADER_MAP`, put in front at the end.
//!
//! What is held is the column list, never the rows: a caller that cannot know the columns
//! before the last row writes the rows somewhere first (see `routes::groups::listing`).
use serde_json::{Map, Value};

use crate::domain::filters::erlang_float_text;

/// `crossbar.hrl`'s `?CSV_HEADER_MAP`: headings (paths joined with `_`) replaced when they
/// match exactly.
const HEADER_MAP: &[(&str, &str)] = &[
    ("account_id", "Account ID"),
    ("account_name", "Account Name"),
    ("amount", "Amount"),
    ("description", "Description"),
    ("id", "ID"),
    ("metadata_callee_id_number", "Callee ID Number"),
    ("metadata_callee_id_name", "Callee ID Name"),
    ("metadata_caller_id_number", "Caller ID Number"),
    ("metadata_caller_id_name", "Caller ID Name"),
    ("metadata_direction", "Direction"),
    ("metadata_from", "From"),
    ("metadata_to", "To"),
    ("metadata_rate_description", "Rate Description"),
    ("metadata_rate_increment", "Rate Increment"),
    ("metadata_rate_minimum", "Rate Minimum"),
    ("metadata_rate_name", "Rate Name"),
    ("metadata_rate_nocharge_time", "Grace Period"),
    ("metadata_rate_value", "Rate"),
    ("period_start", "Start Time"),
    ("period_end", "End Time"),
    ("source_id", "Source ID"),
    ("source_service", "Source Service"),
    ("usage_quantity", "Usage Quantity"),
    ("usage_type", "Usage Type"),
    ("usage_unit", "Usage Unit"),
];

/// The columns seen so far (`kz_csv`'s cell ordering): paths of leaf values.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Columns {
    paths: Vec<Vec<String>>,
}

impl Columns {
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Writes `row` as `kz_csv:jobj_to_file/2` does: its new columns are appended first, then
    /// one cell for every known column. A row that is not an object is written as `[row]`.
    pub fn write_row(&mut self, row: &Value, out: &mut Vec<u8>) {
        let empty = Map::new();
        let object = row.as_object().unwrap_or(&empty);
        let mut path = Vec::new();
        self.learn(object, &mut path);
        let cells: Vec<Option<Vec<u8>>> = self
            .paths
            .iter()
            .map(|path| lookup(object, path).and_then(cell))
            .collect();
        write_line(cells, out);
    }

    /// `kz_csv:write_header_to_file/2`: headings joined with `_`, relabelled, all quoted.
    pub fn header(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let cells = self
            .paths
            .iter()
            .map(|path| {
                let heading = path.join("_");
                let label = HEADER_MAP
                    .iter()
                    .find(|(from, _)| *from == heading)
                    .map_or(heading.as_str(), |(_, to)| to);
                Some(label.as_bytes().to_vec())
            })
            .collect();
        write_line(cells, &mut out);
        out
    }

    /// `maybe_update_ordering/2` over `kz_json:flatten/1`: depth first, in stored key order;
    /// objects are descended (an empty one gives no column), arrays are not.
    fn learn(&mut self, object: &Map<String, Value>, path: &mut Vec<String>) {
        for (key, value) in object {
            path.push(key.clone());
            match value {
                Value::Object(inner) => self.learn(inner, path),
                _ => {
                    if !self.paths.iter().any(|p| p == path) {
                        self.paths.push(path.clone());
                    }
                }
            }
            path.pop();
        }
    }
}

fn lookup<'a>(object: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let value = object.get(first)?;
    if rest.is_empty() {
        return Some(value);
    }
    lookup(value.as_object()?, rest)
}

/// `kz_csv:row_to_iolist/1`: cells quoted (`"` doubled) and joined by `,`, a missing cell
/// empty, the line ended by LF.
fn write_line(cells: Vec<Option<Vec<u8>>>, out: &mut Vec<u8>) {
    for (i, cell) in cells.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if let Some(bytes) = cell {
            out.push(b'"');
            for b in bytes {
                if b == b'"' {
                    out.push(b'"');
                }
                out.push(b);
            }
            out.push(b'"');
        }
    }
    out.push(b'\n');
}

/// `kz_csv:cell_to_binary/1` on a JSON value: `None` is an empty cell (nothing between the
/// commas), which is also what a value `kz_term:to_binary/1` refuses becomes.
fn cell(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Bool(b) => Some(b.to_string().into_bytes()),
        Value::Null => Some(b"null".to_vec()),
        Value::Number(n) => Some(number(n).into_bytes()),
        // A list: its items joined by "," as an iolist, so strings are their bytes, integers
        // 0..=255 single raw bytes (Kazoo's bug), nested lists concatenated; anything else
        // makes the whole cell empty.
        Value::Array(items) => {
            let mut bytes = Vec::new();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    bytes.push(b',');
                }
                iolist(item, &mut bytes)?;
            }
            Some(bytes)
        }
        // Only when a column known as a leaf holds an object in this row: its JSON text.
        Value::Object(_) => serde_json::to_vec(value).ok(),
    }
}

fn iolist(value: &Value, out: &mut Vec<u8>) -> Option<()> {
    match value {
        Value::String(s) => out.extend_from_slice(s.as_bytes()),
        Value::Number(n) => out.push(u8::try_from(n.as_u64()?).ok()?),
        Value::Array(items) => {
            for item in items {
                iolist(item, out)?;
            }
        }
        _ => return None,
    }
    Some(())
}

/// `kz_term:to_binary/1`: integers in decimal, floats as `kz_mochinum:digits/1` writes them
/// (the shortest form that reads back, `1.0`, `0.001`, `1.0e+20`, `1.0e-7`).
fn number(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    erlang_float_text(n.as_f64().unwrap_or(0.0))
}

/// The name a CSV answer is sent as (`api_util:csv_file_name/2`, then `filename:basename/1`):
/// `X-File-Name`, else the request value `file_name`, else Kazoo's temporary file's name.
pub fn file_name(header: Option<&str>, requested: Option<&str>) -> String {
    match header.or(requested) {
        Some(name) => basename(name).to_owned(),
        None => format!("json_{}.csv", crate::domain::ids::random_hex(11)),
    }
}

/// Erlang's `filename:basename/1` on a `/`-separated name: trailing slashes are dropped.
fn basename(name: &str) -> &str {
    let trimmed = name.trim_end_matches('/');
    if trimmed.is_empty() && !name.is_empty() {
        return "";
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

/// A whole CSV body of `rows` held in memory (one page, or one group): the header row, then
/// the rows. `None` for no rows: Crossbar answers 204 with nothing.
pub fn render<'a>(rows: impl IntoIterator<Item = &'a Value>) -> Option<Vec<u8>> {
    let mut columns = Columns::default();
    let mut body = Vec::new();
    for row in rows {
        columns.write_row(row, &mut body);
    }
    if body.is_empty() {
        return None;
    }
    let mut out = columns.header();
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn csv(rows: &[Value]) -> String {
        String::from_utf8(render(rows).unwrap()).unwrap()
    }

    #[test]
    fn the_groups_list_of_the_trace() {
        let rows = [
            json!({"id":"g2","name":"Sales \"A\", West","features":["music_on_hold"],"endpoints":3,"flags":[]}),
            json!({"id":"g1","name":"Support","features":[],"endpoints":0,"flags":["a","b"]}),
        ];
        let body = csv(&rows);
        assert_eq!(
            body,
            "\"ID\",\"name\",\"features\",\"endpoints\",\"flags\"\n\"g2\",\"Sales \"\"A\"\", West\",\"music_on_hold\",\"3\",\"\"\n\"g1\",\"Support\",\"\",\"0\",\"a,b\"\n"
        );
        assert_eq!(body.len(), 119);
    }

    #[test]
    fn a_column_first_seen_later_is_appended_and_earlier_rows_are_not_padded() {
        let rows = [
            json!({"id":"a","features":[],"endpoints":0,"flags":[]}),
            json!({"id":"b","name":"B","features":[],"endpoints":1,"flags":[]}),
            json!({"id":"c","features":[],"endpoints":0,"flags":[]}),
        ];
        assert_eq!(
            csv(&rows),
            "\"ID\",\"features\",\"endpoints\",\"flags\",\"name\"\n\"a\",\"\",\"0\",\"\"\n\"b\",\"\",\"1\",\"\",\"B\"\n\"c\",\"\",\"0\",\"\",\n"
        );
    }

    #[test]
    fn nested_objects_are_flattened_and_empty_ones_give_no_column() {
        let group = json!({"name":"G","endpoints":{"u1":{"type":"user"},"d1":{"type":"device","weight":2}},"music_on_hold":{},"flags":["x","y"],"id":"gid"});
        assert_eq!(
            csv(&[group]),
            "\"name\",\"endpoints_u1_type\",\"endpoints_d1_type\",\"endpoints_d1_weight\",\"flags\",\"ID\"\n\"G\",\"user\",\"device\",\"2\",\"x,y\",\"gid\"\n"
        );
        let support = json!({"name":"Support","endpoints":{},"flags":["a","b"],"id":"g1"});
        assert_eq!(
            csv(&[support]),
            "\"name\",\"flags\",\"ID\"\n\"Support\",\"a,b\",\"g1\"\n"
        );
    }

    #[test]
    fn values_render_as_kz_term_writes_them() {
        let row = json!({"s":"","t":true,"f":false,"n":null,"i":-3,"x":1.5,"big":1e20,"small":0.001,
            "ints":[65,66],"wide":[300],"objs":[{"a":1}],"nested":[["a","b"],"c"],"nl":"A\nB"});
        assert_eq!(
            csv(&[row]),
            "\"s\",\"t\",\"f\",\"n\",\"i\",\"x\",\"big\",\"small\",\"ints\",\"wide\",\"objs\",\"nested\",\"nl\"\n\"\",\"true\",\"false\",\"null\",\"-3\",\"1.5\",\"1.0e+20\",\"0.001\",\"A,B\",,,\"ab,c\",\"A\nB\"\n"
        );
        assert_eq!(
            number(&serde_json::Number::from_f64(100.0).unwrap()),
            "100.0"
        );
        assert_eq!(
            number(&serde_json::Number::from_f64(1e-7).unwrap()),
            "1.0e-7"
        );
        assert_eq!(number(&serde_json::Number::from_f64(0.5).unwrap()), "0.5");
    }

    #[test]
    fn an_empty_list_renders_nothing() {
        assert_eq!(render(&[]), None);
    }

    #[test]
    fn the_file_name_is_the_basename_of_the_first_given() {
        assert_eq!(file_name(Some("dir/g.csv"), Some("b.csv")), "g.csv");
        assert_eq!(file_name(None, Some("groups")), "groups");
        assert_eq!(file_name(Some("x/y/z.csv"), None), "z.csv");
        let generated = file_name(None, None);
        assert!(generated.starts_with("json_") && generated.ends_with(".csv"));
        assert_eq!(generated.len(), "json_.csv".len() + 22);
    }
}
