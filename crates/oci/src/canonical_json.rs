//! Canonical JSON: object keys sorted, no insignificant whitespace. Everything kiln
//! writes into the store goes through this, so the same content always has the same
//! digest regardless of struct field order or hash-map iteration order.

use serde::Serialize;
use serde_json::Value;

/// Serialise `value` canonically.
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Serialising our own types to a Value cannot fail: they have string keys only.
    let v = serde_json::to_value(value).expect("serialisable to JSON");
    let mut out = Vec::new();
    write_value(&v, &mut out);
    out
}

fn write_value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(k.clone()), out);
                out.push(b':');
                write_value(&map[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(v: &Value, out: &mut Vec<u8>) {
    // Writing to a Vec cannot fail.
    serde_json::to_writer(&mut *out, v).expect("writing JSON to memory");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn keys_are_sorted_at_every_level() {
        let mut m = HashMap::new();
        for k in ["zeta", "alpha", "mid", "beta", "omega"] {
            m.insert(
                k.to_string(),
                serde_json::json!({"b": [1, {"y": 1, "x": "<&>"}], "a": null}),
            );
        }
        let s = String::from_utf8(canonical_json(&m)).unwrap();
        assert!(
            s.starts_with(r#"{"alpha":{"a":null,"b":[1,{"x":"<&>","y":1}]},"beta""#),
            "{s}"
        );
        // Stable across repeated serialisation of differently-ordered maps.
        for _ in 0..5 {
            let m2: HashMap<String, Value> = serde_json::from_str(&s).unwrap();
            assert_eq!(canonical_json(&m2), s.as_bytes());
        }
    }
}
