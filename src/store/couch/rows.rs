//! The rows of a CouchDB view answer (`{"total_rows":…,"offset":…,"rows":[{…},{…}]}`), cut out
//! of the response body one at a time as its bytes arrive. Only the row being read and the bytes
//! not yet cut are held, so a view of any size, or of any document size, reads in bounded memory.

/// Finds each element of the top-level `"rows"` array in a byte stream.
#[derive(Debug, Default)]
pub struct RowSplitter {
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned.
    scanned: usize,
    /// Where the row being read starts in `buf`.
    row_start: Option<usize>,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The last string at the top level, while it could still be the key `rows`.
    top_string: Vec<u8>,
    /// The key whose value is being read at the top level.
    top_key_is_rows: bool,
    phase: Phase,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    #[default]
    Before,
    Inside,
    After,
}

/// The answer is not the view answer it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl RowSplitter {
    pub fn push(&mut self, bytes: &[u8]) {
        // Bytes before the current row (or all scanned ones between rows) are no longer needed.
        let keep_from = self.row_start.unwrap_or(self.scanned);
        if keep_from > 0 {
            self.buf.drain(..keep_from);
            self.scanned -= keep_from;
            self.row_start = self.row_start.map(|s| s - keep_from);
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete row's bytes, or `None` until more bytes are pushed.
    pub fn next_row(&mut self) -> Result<Option<Vec<u8>>, Malformed> {
        while self.scanned < self.buf.len() {
            let at = self.scanned;
            let b = self.buf[at];
            self.scanned += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                } else if self.depth == 1 && self.top_string.len() <= 4 {
                    self.top_string.push(b);
                }
                continue;
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    self.top_string.clear();
                }
                b'{' | b'[' => {
                    self.depth += 1;
                    if self.depth == 1 && b != b'{' {
                        return Err(Malformed("a view answer is an object"));
                    }
                    if self.depth == 2 && self.top_key_is_rows && self.phase == Phase::Before {
                        if b != b'[' {
                            return Err(Malformed("`rows` is an array"));
                        }
                        self.phase = Phase::Inside;
                    } else if self.depth == 3 && self.phase == Phase::Inside {
                        self.row_start = Some(at);
                    }
                }
                b'}' | b']' => {
                    if self.depth == 0 {
                        return Err(Malformed("unbalanced view answer"));
                    }
                    self.depth -= 1;
                    if self.depth == 2 && self.phase == Phase::Inside {
                        if let Some(start) = self.row_start.take() {
                            let row = self.buf[start..=at].to_vec();
                            return Ok(Some(row));
                        }
                    } else if self.depth == 1 && self.phase == Phase::Inside {
                        self.phase = Phase::After;
                    }
                }
                b':' if self.depth == 1 => self.top_key_is_rows = self.top_string == b"rows",
                b',' if self.depth == 1 => self.top_key_is_rows = false,
                _ => {}
            }
        }
        Ok(None)
    }

    /// At the end of the body: every row was read and the answer was complete.
    pub fn finish(&self) -> Result<(), Malformed> {
        if self.phase == Phase::After && self.depth == 0 && !self.in_string {
            Ok(())
        } else {
            Err(Malformed("the view answer ended early"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn split(chunks: &[&[u8]]) -> Result<Vec<Value>, Malformed> {
        let mut splitter = RowSplitter::default();
        let mut rows = Vec::new();
        for chunk in chunks {
            splitter.push(chunk);
            while let Some(row) = splitter.next_row()? {
                rows.push(serde_json::from_slice(&row).unwrap());
            }
        }
        splitter.finish()?;
        Ok(rows)
    }

    #[test]
    fn rows_come_out_whole_and_in_order() {
        let body = br#"{"total_rows":2,"offset":0,"rows":[
{"id":"a","key":"a","value":{"name":"x}]\"{["}},
{"id":"b","key":["b",1],"value":null,"doc":{"rows":[1,2]}}
],"update_seq":"rows"}"#;
        let rows = split(&[body]).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["value"]["name"], "x}]\"{[");
        assert_eq!(rows[1]["doc"], json!({"rows": [1, 2]}));
    }

    #[test]
    fn empty_and_truncated_answers() {
        assert_eq!(
            split(&[br#"{"total_rows":0,"offset":0,"rows":[]}"#]).unwrap(),
            Vec::<Value>::new()
        );
        assert!(split(&[br#"{"total_rows":1,"rows":[{"id":"a","key":1"#]).is_err());
        assert!(split(&[br#"{"rows":[{"id":"a"}]"#]).is_err());
        assert!(split(&[b"[1,2]"]).is_err());
        assert!(split(&[br#"{"rows":{}}"#]).is_err());
    }

    #[test]
    fn only_completed_rows_are_held() {
        let mut splitter = RowSplitter::default();
        splitter.push(br#"{"rows":[{"id":"a","value":"#);
        assert_eq!(splitter.next_row().unwrap(), None);
        splitter.push(br#"1},{"id":"b"#);
        assert_eq!(
            splitter.next_row().unwrap().unwrap(),
            br#"{"id":"a","value":1}"#
        );
        assert_eq!(splitter.next_row().unwrap(), None);
        splitter.push(b"x");
        // Only the unfinished row is kept.
        assert_eq!(splitter.buf, br#"{"id":"bx"#);
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_rows_serde_json_reads(
            names in proptest::collection::vec("[a-z\"\\\\{}\\[\\],:é ]{0,8}", 0..6),
            cut in proptest::collection::vec(1usize..9, 1..40),
        ) {
            let rows: Vec<Value> = names
                .iter()
                .enumerate()
                .map(|(i, n)| json!({"id": i.to_string(), "key": n, "value": {"name": n, "l": [n]}}))
                .collect();
            let body = serde_json::to_vec_pretty(&json!({"total_rows": rows.len(), "rows": rows})).unwrap();
            let mut chunks = Vec::new();
            let (mut at, mut i) = (0, 0);
            while at < body.len() {
                let end = (at + cut[i % cut.len()]).min(body.len());
                chunks.push(&body[at..end]);
                at = end;
                i += 1;
            }
            prop_assert_eq!(split(&chunks).unwrap(), rows);
        }
    }
}
