//! How values look in JSON: money as a string with exactly two decimals ("19.99"), timestamps as
//! RFC 3339 in UTC with microseconds ("2024-05-01T12:00:00.000000Z").

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::Serializer;

use crate::error::ApiError;

/// Largest price a NUMERIC(10,2) column holds.
pub const MAX_PRICE: Decimal = Decimal::from_parts(999_999_999, 0, 0, false, 2);

pub fn money_string(d: &Decimal) -> String {
    let mut d = d.round_dp(2);
    d.rescale(2);
    d.to_string()
}

pub fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn money<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&money_string(d))
}

pub fn ts<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&timestamp(t))
}

pub fn opt_ts<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&timestamp(t)),
        None => s.serialize_none(),
    }
}

/// Parses a money amount given as a JSON string ("19.99") or number (19.99): at most two
/// decimals, not negative, at most 99999999.99. Anything else is a 422 `invalid_<field>`.
pub fn parse_money(field: &'static str, v: &serde_json::Value) -> Result<Decimal, ApiError> {
    let code = match field {
        "price" => "invalid_price",
        _ => "invalid_amount",
    };
    let text = match v {
        serde_json::Value::String(s) => s.trim().to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => {
            return Err(ApiError::unprocessable(
                code,
                format!("{field} must be a decimal string like \"19.99\" or a number"),
            ))
        }
    };
    let d = Decimal::from_str_exact(&text)
        .map_err(|_| ApiError::unprocessable(code, format!("{field} {text:?} is not a decimal amount")))?;
    let d = d.normalize();
    if d.scale() > 2 {
        return Err(ApiError::unprocessable(code, format!("{field} has more than two decimals")));
    }
    if d.is_sign_negative() && !d.is_zero() {
        return Err(ApiError::unprocessable(code, format!("{field} must not be negative")));
    }
    if d > MAX_PRICE {
        return Err(ApiError::unprocessable(code, format!("{field} must be at most {MAX_PRICE}")));
    }
    let mut d = d;
    d.rescale(2);
    Ok(d)
}

/// Trimmed text of `1..=max` characters, else 422 `invalid_<field>`.
pub fn required_text(field: &'static str, v: &str, max: usize) -> Result<String, ApiError> {
    let t = v.trim();
    if t.is_empty() || t.chars().count() > max {
        return Err(ApiError::unprocessable("invalid_field", format!("{field} must be 1 to {max} characters")));
    }
    Ok(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn money_is_two_decimals() {
        assert_eq!(money_string(&Decimal::new(5, 0)), "5.00");
        assert_eq!(money_string(&Decimal::new(1999, 2)), "19.99");
        assert_eq!(money_string(&Decimal::new(19990, 3)), "19.99");
    }

    #[test]
    fn parses_money_strictly() {
        assert_eq!(parse_money("price", &json!("19.99")).unwrap().to_string(), "19.99");
        assert_eq!(parse_money("price", &json!(19.9)).unwrap().to_string(), "19.90");
        assert_eq!(parse_money("price", &json!(7)).unwrap().to_string(), "7.00");
        assert_eq!(parse_money("price", &json!("1.500")).unwrap().to_string(), "1.50");
        for bad in [json!("1.999"), json!(-1), json!("abc"), json!(null), json!("100000000")] {
            let e = parse_money("price", &bad).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        }
    }
}
