//! Request parsing with Kakao's leniency: numbers may arrive as JSON numbers or
//! as numeric strings (the official samples quote them), and every failure is a
//! `-2` whose message names the field.

use serde_json::{Map, Value};
use url::Url;

use super::error::ApiError;
use super::Method;

/// Length limits from the request tables.
pub(crate) const MAX_ID_LEN: usize = 100;
pub(crate) const MAX_URL_LEN: usize = 255;
pub(crate) const MAX_PAYLOAD_LEN: usize = 200;

/// A request body as a JSON object.
pub(crate) struct Body(Map<String, Value>);

impl Body {
    pub fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(_) => Err(ApiError::invalid_param(
                "request body must be a JSON object",
            )),
            Err(e) => Err(ApiError::invalid_param(format!("malformed JSON body: {e}"))),
        }
    }

    /// A present, non-null value.
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub fn opt_str(&self, name: &str, max_len: usize) -> Result<Option<String>, ApiError> {
        let text = match self.get(name) {
            None => return Ok(None),
            Some(Value::String(s)) => s.clone(),
            // A number where a string is expected is coerced, as Kakao's
            // samples mix the two freely.
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(ApiError::invalid_param(format!("{name} must be a string"))),
        };
        if text.chars().count() > max_len {
            return Err(ApiError::invalid_param(format!(
                "{name} must be at most {max_len} characters"
            )));
        }
        Ok(Some(text))
    }

    pub fn req_str(&self, name: &str, max_len: usize) -> Result<String, ApiError> {
        match self.opt_str(name, max_len)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(missing(name)),
        }
    }

    pub fn opt_int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        let value = match self.get(name) {
            None => return Ok(None),
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
            Some(_) => None,
        };
        value
            .map(Some)
            .ok_or_else(|| ApiError::invalid_param(format!("{name} must be an integer")))
    }

    pub fn req_int(&self, name: &str) -> Result<i64, ApiError> {
        self.opt_int(name)?.ok_or_else(|| missing(name))
    }

    /// An integer that must be `>= min`.
    pub fn req_int_min(&self, name: &str, min: i64) -> Result<i64, ApiError> {
        let value = self.req_int(name)?;
        if value < min {
            return Err(ApiError::invalid_param(format!("{name} must be >= {min}")));
        }
        Ok(value)
    }

    pub fn req_url(&self, name: &str) -> Result<Url, ApiError> {
        let raw = self.req_str(name, MAX_URL_LEN)?;
        match Url::parse(&raw) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(url),
            _ => Err(ApiError::invalid_param(format!(
                "{name} must be an absolute http(s) URL"
            ))),
        }
    }

    pub fn opt_method(&self, name: &str) -> Result<Option<Method>, ApiError> {
        match self.opt_str(name, MAX_ID_LEN)?.as_deref() {
            None => Ok(None),
            Some("CARD") => Ok(Some(Method::Card)),
            Some("MONEY") => Ok(Some(Method::Money)),
            Some(_) => Err(ApiError::invalid_param(format!(
                "{name} must be CARD or MONEY"
            ))),
        }
    }

    /// `cid` is required and must be the simulator's merchant code.
    pub fn check_cid(&self, expected: &str) -> Result<(), ApiError> {
        let cid = self.req_str("cid", MAX_ID_LEN)?;
        if cid != expected {
            return Err(ApiError::payment(-731, "invalid cid"));
        }
        Ok(())
    }
}

fn missing(name: &str) -> ApiError {
    ApiError::invalid_param(format!("{name} is required"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> Body {
        Body::parse(json.as_bytes()).expect("object")
    }

    #[test]
    fn integers_accept_numbers_and_numeric_strings() {
        let b = body(r#"{"a": 2200, "b": "2200", "c": " 7 ", "d": "x", "e": 1.5, "f": null}"#);
        assert_eq!(b.req_int("a").expect("a"), 2200);
        assert_eq!(b.req_int("b").expect("b"), 2200);
        assert_eq!(b.req_int("c").expect("c"), 7);
        assert!(b.req_int("d").expect_err("d").message.contains("d must be"));
        assert!(b.req_int("e").is_err());
        assert!(b
            .req_int("f")
            .expect_err("f")
            .message
            .contains("f is required"));
        assert_eq!(b.opt_int("f").expect("null is absent"), None);
    }

    #[test]
    fn strings_have_limits_and_must_not_be_blank() {
        let long = "x".repeat(101);
        let b = body(&format!(r#"{{"a": "{long}", "b": "", "c": 5, "d": []}}"#));
        assert!(b
            .req_str("a", MAX_ID_LEN)
            .expect_err("a")
            .message
            .contains("at most 100"));
        assert!(b.req_str("b", MAX_ID_LEN).is_err());
        assert_eq!(b.req_str("c", MAX_ID_LEN).expect("c"), "5");
        assert!(b.req_str("d", MAX_ID_LEN).is_err());
    }

    #[test]
    fn non_object_and_malformed_bodies_are_rejected() {
        for raw in ["[1]", "{", "", "\"x\""] {
            let err = Body::parse(raw.as_bytes()).err().expect(raw);
            assert_eq!(err.code, -2);
        }
    }

    #[test]
    fn cid_is_checked() {
        assert_eq!(
            body(r#"{}"#)
                .check_cid("TC0ONETIME")
                .expect_err("missing")
                .code,
            -2
        );
        let wrong = body(r#"{"cid": "TCSUBSCRIP"}"#);
        assert_eq!(wrong.check_cid("TC0ONETIME").expect_err("wrong").code, -731);
    }
}
