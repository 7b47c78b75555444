//! Invariants: a canonical target is origin-form ASCII with no dot, empty or ambiguous
//! segment and no encoded separator; canonicalizing it again changes nothing.
#![no_main]
use gateway::path::{canonicalize, canonicalize_with};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| {
    for allow_non_ascii in [false, true] {
        let Ok(t) = canonicalize_with(raw, allow_non_ascii) else {
            continue;
        };
        assert!(t.path.starts_with('/'));
        assert!(t.path.is_ascii(), "{:?}", t.path);
        let again = canonicalize_with(t.to_request_target().as_bytes(), allow_non_ascii)
            .expect("a canonical target is accepted");
        assert_eq!(again, t, "not idempotent");
        let segments: Vec<&str> = t.path.split('/').skip(1).collect();
        let last = segments.len().saturating_sub(1);
        for (i, seg) in segments.iter().enumerate() {
            assert!(!(seg.is_empty() && i != last), "empty segment in {:?}", t.path);
            assert!(*seg != "." && *seg != "..", "dot segment in {:?}", t.path);
            let upper = seg.to_ascii_uppercase();
            for encoded in ["%2E", "%2F", "%5C", "%25", "%3B", "%3F", "%23", "%00"] {
                assert!(!upper.contains(encoded), "{encoded} in {:?}", t.path);
            }
            for raw_byte in ['\\', ';', ' ', '#', '?'] {
                assert!(!seg.contains(raw_byte), "{raw_byte:?} in {:?}", t.path);
            }
        }
        if !allow_non_ascii {
            // Strict mode accepts nothing the permissive mode would refuse.
            assert!(canonicalize_with(raw, true).is_ok());
        } else {
            assert!(!t.path.to_ascii_uppercase().contains("%C0"), "overlong: {:?}", t.path);
        }
    }
    let _ = canonicalize(raw);
});
