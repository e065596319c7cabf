//! Which Crossbar kz-groups answers as (`KZ_GROUPS_CROSSBAR`): Kazoo 4.3, what most operators
//! run (the default), or Kazoo master. Every rule the two lines answer differently is a method
//! here, each naming its source; `docs/crossbar-lines.md` lists them all.
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CrossbarLine {
    /// Branch `4.3`: listings through `crossbar_doc:load_view` (csv-and-chunked.md §2.1, §3.2).
    #[default]
    V4_3,
    /// Branch `master`: listings through `crossbar_view` (groups-contract §5).
    Master,
}

/// How a listing's `page_size` request value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageSizeError {
    /// Not an integer: master's 404 `invalid page size`.
    Invalid,
    /// Zero or negative: master's 404 `page size must be at least 1`.
    TooSmall,
}

impl CrossbarLine {
    /// `4.3` or `master`, as `KZ_GROUPS_CROSSBAR` spells them.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim() {
            "" | "4.3" => Ok(Self::V4_3),
            "master" => Ok(Self::Master),
            other => Err(format!(
                "KZ_GROUPS_CROSSBAR must be \"4.3\" or \"master\", got {other:?}"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V4_3 => "4.3",
            Self::Master => "master",
        }
    }

    /// The rows of a page come out in reverse view order, and a `paginate=false` listing whole
    /// in descending order: 4.3's `cb_groups:normalize_view_results/2` puts each row in front of
    /// its accumulator, and `crossbar_doc:handle_datamgr_pagination_success/2` each batch in
    /// front of the earlier ones.
    pub fn reverses_rows(self) -> bool {
        self == Self::V4_3
    }

    /// `descending` / `ascending` from the query string: master's `crossbar_view:direction/2`;
    /// 4.3's `crossbar_doc:view_sort_direction/1` reads only the module's options.
    pub fn honours_direction(self) -> bool {
        self == Self::Master
    }

    /// `end_key`: master's `crossbar_view:start_end_keys/3`; 4.3's `crossbar_doc:load_view/3`
    /// reads `start_key` only.
    pub fn honours_end_key(self) -> bool {
        self == Self::Master
    }

    /// `is_chunked` / `chunk_size`: only master's `crossbar_view` reads them for groups
    /// (csv-and-chunked §3.2).
    pub fn chunks(self) -> bool {
        self == Self::Master
    }

    /// The envelope's `tokens` object: master's `api_util:create_default_resp_envelope/1`;
    /// 4.3's `api_util:do_create_resp_envelope/1` has none.
    pub fn reports_tokens(self) -> bool {
        self == Self::Master
    }

    /// `version` on every answer: 4.3's `do_create_resp_envelope/1` always adds it; master's
    /// `maybe_add_version/2` only for an authenticated request.
    pub fn always_versions(self) -> bool {
        self == Self::V4_3
    }

    /// The `auth_token` of an error envelope when the request carried none: 4.3's
    /// `do_create_resp_envelope/1` writes `kz_term:to_binary(undefined)`, i.e. `"undefined"`;
    /// master leaves the key out.
    pub fn missing_token_in_errors(self) -> Option<&'static str> {
        match self {
            Self::V4_3 => Some("undefined"),
            Self::Master => None,
        }
    }

    /// How many times each path segment is URL-decoded: twice on 4.3, whose
    /// `cb_context:path_tokens/1` decodes every token before `path_token/1` decodes it again
    /// (so `%2541` is `A`); once on master.
    pub fn path_decodes(self) -> usize {
        match self {
            Self::V4_3 => 2,
            Self::Master => 1,
        }
    }

    /// The page size a listing uses, from its `page_size` request value (`None`: absent).
    /// Master refuses a bad one while paginating (`crossbar_view:get_page_size/2`); 4.3 falls
    /// back to the default silently (`cb_context:pagination_page_size/2`).
    pub fn page_size(
        self,
        requested: Option<&Value>,
        default: usize,
        paginate: bool,
    ) -> Result<usize, PageSizeError> {
        let Some(value) = requested else {
            return Ok(default);
        };
        match (self, to_integer(value)) {
            (_, Some(n)) if n >= 1 => Ok(n as usize),
            (Self::Master, None) if paginate => Err(PageSizeError::Invalid),
            (Self::Master, Some(_)) if paginate => Err(PageSizeError::TooSmall),
            _ => Ok(default),
        }
    }
}

/// `kz_term:to_integer/1` (both lines read `page_size` and `chunk_size` with it): an integer,
/// or the text of one (an optional sign and digits, nothing around them), or a float or the
/// text of one (`1.5`: digits on both sides of the dot), rounded half away from zero.
pub fn to_integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(round)),
        Value::String(s) => {
            let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                return s.parse().ok();
            }
            erlang_float(s).and_then(round)
        }
        _ => None,
    }
}

fn round(f: f64) -> Option<i64> {
    let r = f.round();
    (r.abs() < 9.0e18).then_some(r as i64)
}

/// Erlang's `binary_to_float/1`: `[+-]digits.digits[(e|E)[+-]digits]`.
fn erlang_float(s: &str) -> Option<f64> {
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let (int, frac) = mantissa.split_once('.')?;
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)));
    (digits(int) && digits(frac) && exponent_ok)
        .then(|| s.parse().ok())
        .flatten()
}

impl std::fmt::Display for CrossbarLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_setting_names_a_line_and_defaults_to_4_3() {
        assert_eq!(CrossbarLine::parse("4.3"), Ok(CrossbarLine::V4_3));
        assert_eq!(CrossbarLine::parse(" master "), Ok(CrossbarLine::Master));
        assert_eq!(CrossbarLine::parse(""), Ok(CrossbarLine::V4_3));
        assert_eq!(CrossbarLine::default(), CrossbarLine::V4_3);
        let e = CrossbarLine::parse("5.0").unwrap_err();
        assert!(e.contains("KZ_GROUPS_CROSSBAR"), "{e}");
    }

    #[test]
    fn a_bad_page_size_is_an_error_on_master_and_the_default_on_4_3() {
        let (v43, master) = (CrossbarLine::V4_3, CrossbarLine::Master);
        for bad in [json!("abc"), json!("0"), json!(-3), json!(0)] {
            assert_eq!(v43.page_size(Some(&bad), 50, true), Ok(50), "{bad}");
            assert!(master.page_size(Some(&bad), 50, true).is_err(), "{bad}");
            // Not paginating, master ignores it too.
            assert_eq!(master.page_size(Some(&bad), 50, false), Ok(50), "{bad}");
        }
        assert_eq!(
            master.page_size(Some(&json!("abc")), 50, true),
            Err(PageSizeError::Invalid)
        );
        assert_eq!(
            master.page_size(Some(&json!("0")), 50, true),
            Err(PageSizeError::TooSmall)
        );
        assert_eq!(v43.page_size(Some(&json!("2")), 50, true), Ok(2));
        // kz_term:to_integer/1: floats rounded, no white space.
        assert_eq!(master.page_size(Some(&json!("1.5")), 50, true), Ok(2));
        assert_eq!(master.page_size(Some(&json!(2.4)), 50, true), Ok(2));
        assert_eq!(v43.page_size(Some(&json!(" 5")), 50, true), Ok(50));
        assert_eq!(
            master.page_size(Some(&json!("1e3")), 50, true),
            Err(PageSizeError::Invalid)
        );
        assert_eq!(master.page_size(Some(&json!("+7")), 50, true), Ok(7));
        assert_eq!(master.page_size(None, 50, true), Ok(50));
    }
}
