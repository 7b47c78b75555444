//! `x-request-id`: the client's if it is well-formed, else a fresh UUID.

use http::HeaderMap;
use rl_contract::identity::{REQUEST_ID, is_well_formed_request_id, single_header};

pub fn from_headers(headers: &HeaderMap) -> String {
    match single_header(headers, REQUEST_ID) {
        Some(id) if is_well_formed_request_id(id) => id.to_owned(),
        _ => {
            // Straight into a buffer: `to_string` goes through the formatting machinery.
            let mut buf = uuid::Uuid::encode_buffer();
            uuid::Uuid::new_v4()
                .hyphenated()
                .encode_lower(&mut buf)
                .to_owned()
        }
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
