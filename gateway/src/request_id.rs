//! `x-request-id`: the client's if it is well-formed, else a fresh UUID.

use http::HeaderMap;
use rl_contract::identity::REQUEST_ID;

pub fn is_well_formed(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

pub fn from_headers(headers: &HeaderMap) -> String {
    let mut all = headers.get_all(REQUEST_ID).iter();
    match (all.next().and_then(|v| v.to_str().ok()), all.next()) {
        (Some(id), None) if is_well_formed(id) => id.to_owned(),
        _ => uuid::Uuid::new_v4().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn keeps_good_ids_and_replaces_bad_ones() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123_x.y:z"));
        assert_eq!(from_headers(&h), "abc-123_x.y:z");
        h.insert(REQUEST_ID, HeaderValue::from_static("bad id\"<script>"));
        assert_ne!(from_headers(&h), "bad id\"<script>");
        assert_eq!(from_headers(&h).len(), 36);
        h.insert(
            REQUEST_ID,
            HeaderValue::from_str(&"a".repeat(129)).expect("ascii"),
        );
        assert_eq!(from_headers(&h).len(), 36);
    }
}
