//! A binary of its own: its counting global allocator would count every other test's allocations.
//! What a request body costs in memory, whatever its JSON's shape: every allocation made while the
//! body is parsed, validated and answered is counted, and the peak must stay within the
//! documented bound (README, "Hostile clients"). Hostile shapes from the field, then arbitrary ones.
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use kz_groups::envelope::{self, Data, RequestEnvelope, SuccessBody, Tail};
use kz_groups::error::ApiError;
use kz_groups::json;
use proptest::prelude::*;
use serde_json::{json, Value};

/// Counts the bytes allocated by the current thread: the measured work runs on one thread.
struct Counting;

thread_local! {
    static CURRENT: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn record(delta: isize) {
    // `try_with`: the counters are gone while a thread is being torn down.
    let _ = CURRENT.try_with(|current| {
        let now = current.get() + delta;
        current.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            record(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        record(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new_size) };
        if !q.is_null() {
            // Counted as a move: both blocks exist for a moment.
            record(new_size as isize);
            record(-(layout.size() as isize));
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated at the peak of `work`, beyond what was allocated before it.
fn peak_of(work: impl FnOnce()) -> usize {
    let start = CURRENT.with(Cell::get);
    PEAK.with(|p| p.set(start));
    work();
    (PEAK.with(Cell::get) - start).max(0) as usize
}

/// The documented bound (README): a request's parsed JSON takes at most `json::cost_cap` of its
/// size, an error answer can echo as much again, and the body and answer texts come on top.
fn bound(len: usize) -> usize {
    2 * json::cost_cap(len) + 4 * len + 256 * 1024
}

/// Which validation a body gets after stage 1: a login's, before any authentication, or a
/// group write's.
#[derive(Debug, Clone, Copy)]
enum Flow {
    Login,
    GroupWrite,
}

/// Stage 1 and the flow's validation, each failure rendered as its answer.
fn handle(body: &[u8], flow: Flow, schemas: &kz_groups::validation::Schemas) {
    let tail = Tail::default();
    let render_error = |e: ApiError| {
        serde_json::to_vec(&envelope::error(&e, &tail).unwrap()).unwrap();
    };
    let env = match RequestEnvelope::parse(Some("application/json"), body, "") {
        Ok(env) => env,
        Err(e) => return render_error(e),
    };
    let schema = match flow {
        Flow::Login => &schemas.api_auth,
        Flow::GroupWrite => &schemas.groups,
    };
    match schema.validate(env.data) {
        Ok(data) => {
            let data = Data::Json(data);
            let body = SuccessBody {
                extra: &[],
                data: Some(&data),
                revision: None,
                tail: &tail,
            };
            serde_json::to_vec(&body).unwrap();
        }
        Err(errors) => render_error(ApiError::Validation(errors)),
    }
}

fn check(name: &str, body: &[u8]) {
    let schemas = kz_groups::validation::Schemas::load().unwrap();
    for flow in [Flow::Login, Flow::GroupWrite] {
        let peak = peak_of(|| handle(body, flow, &schemas));
        let ratio = peak as f64 / body.len() as f64;
        eprintln!(
            "{name} ({flow:?}): {} bytes, peak {peak} ({ratio:.1}x), bound {}",
            body.len(),
            bound(body.len())
        );
        assert!(
            peak <= bound(body.len()),
            "{name} ({flow:?}): peak {peak} over the bound {}",
            bound(body.len())
        );
    }
}

fn repeat(item: &str, bytes: usize) -> String {
    let n = bytes / (item.len() + 1);
    vec![item; n.max(1)].join(",")
}

/// Bodies of 2 MB: past the floor of the bound (64 KiB), so the ratios are those of any size.
const MB: usize = 1 << 20;

#[test]
fn long_arrays_of_small_values_stay_within_the_bound() {
    for item in ["0", "null", "[]", "{}", "\"\"", "1234567", "true"] {
        let body = format!(r#"{{"data":{{"api_key":[{}]}}}}"#, repeat(item, 2 * MB));
        check(&format!("array of {item}"), body.as_bytes());
    }
}

#[test]
fn deep_nesting_stays_within_the_bound() {
    for depth in [30, 63, 100, 1000] {
        let one = format!("{}0{}", "[".repeat(depth), "]".repeat(depth));
        let body = format!(r#"{{"data":{{"x":[{}]}}}}"#, repeat(&one, 2 * MB));
        check(&format!("nested {depth}"), body.as_bytes());
    }
}

#[test]
fn many_small_keys_stay_within_the_bound() {
    for (name, width) in [("tiny keys", 2), ("short keys", 8), ("id keys", 32)] {
        let members: Vec<String> = (0..(2 * MB / (width + 8)))
            .map(|i| format!(r#""{i:0width$}":0"#))
            .collect();
        let map = format!("{{{}}}", members.join(","));
        // Once nested (kept as an unknown field), once as the data itself (one error per key).
        check(name, format!(r#"{{"data":{{"x":{map}}}}}"#).as_bytes());
        check(name, format!(r#"{{"data":{map}}}"#).as_bytes());
    }
}

#[test]
fn huge_strings_and_wrong_flags_stay_within_the_bound() {
    let s = "x".repeat(2 * MB);
    check(
        "huge name",
        json!({"data": {"name": s}}).to_string().as_bytes(),
    );
    check(
        "huge unknown",
        json!({"data": {"name": "n", "x": [s]}})
            .to_string()
            .as_bytes(),
    );
    let flags: Vec<Value> = (0..200_000).map(|i| json!(i)).collect();
    check(
        "flags of numbers",
        json!({"data": {"name": "n", "flags": flags}})
            .to_string()
            .as_bytes(),
    );
    let endpoints: serde_json::Map<String, Value> = (0..30_000)
        .map(|i| (format!("{i:032x}"), json!({"type": "user"})))
        .collect();
    check(
        "a legitimate group of 60k endpoints",
        json!({"data": {"name": "n", "endpoints": endpoints}})
            .to_string()
            .as_bytes(),
    );
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(10, 512, 32, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..32).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{0,6}", inner), 0..32)
                .prop_map(|kvs| Value::Object(kvs.into_iter().collect())),
        ]
    })
}

/// Cases per run: a few dozen in the suite, thousands in CI's fuzz run (`KZ_FUZZ_CASES`).
fn fuzz_cases() -> u32 {
    std::env::var("KZ_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(fuzz_cases()))]

    /// The fuzz target: any JSON shape, as a body's data or as the whole body.
    #[test]
    fn any_shape_stays_within_the_bound(data in arb_json(), wrapped in any::<bool>(), repeat in 1usize..400) {
        let one = if wrapped { json!({"data": data}) } else { data };
        // Repetition reaches the sizes where the bound, not its floor, applies.
        let items = vec![one; repeat];
        let body = json!({"data": {"name": "n", "x": items}}).to_string();
        let schemas = kz_groups::validation::Schemas::load().unwrap();
        for flow in [Flow::Login, Flow::GroupWrite] {
            let peak = peak_of(|| handle(body.as_bytes(), flow, &schemas));
            prop_assert!(peak <= bound(body.len()), "{:?}: peak {} over {} for {} bytes", flow, peak, bound(body.len()), body.len());
        }
    }
}
