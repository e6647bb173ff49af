//! Numbers arrive bit-exact: random doubles, floats, longs and decimals, written in every form a
//! Kafka Connect converter writes them (Java's `Double.toString` and `Float.toString` layouts,
//! longer digit strings from older JDKs, integers, quoted NaN and infinities, base64 decimal
//! bytes and NUMERIC decimal text), decoded, built into Arrow, staged as Parquet and read back,
//! then compared bit for bit with the value the source held. Run with `PROPTEST_CASES` to draw
//! more; a failure prints the case and its seed for replay.

use ::arrow::array::{Array, AsArray};
use ::arrow::datatypes::{Decimal128Type, Float32Type, Float64Type, Int64Type};
use base64::Engine as _;
use proptest::prelude::*;

use super::tests::{decode_one, decoder, single_column_event};
use super::*;

/// A one-column row with the JsonConverter's schema envelope: `column` is the schema of the
/// `v` field, `value` its JSON text.
fn record_json(column: &str, value: &str) -> String {
    single_column_event("c", column, value)
}

/// The same row without the schema (`schemas.enable=false`).
fn schemaless_json(value: &str) -> String {
    format!(r#"{{"after":{{"id":1,"v":{value}}},"op":"c"}}"#)
}

/// Decodes one record, builds its batch, stages it as Parquet and reads the `v` column back.
fn through_parquet(value_json: &str) -> Result<::arrow::array::ArrayRef, String> {
    let mut d = decoder("");
    let change = decode_one(&mut d, "t", value_json).map_err(|e| e.to_string())?;
    let parts = to_batches(std::slice::from_ref(&change)).map_err(|e| e.to_string())?;
    let [BatchPart::Rows(rows)] = parts.as_slice() else {
        return Err("expected one batch".into());
    };
    let parquet = crate::stage::encode(std::slice::from_ref(&rows.batch))?;
    let back = crate::stage::decode(parquet.into())?;
    let batch = back.first().ok_or("no batch read back")?;
    let column = batch
        .column_by_name("v")
        .ok_or("no column v read back")?
        .clone();
    Ok(column)
}

/// Java's `Double.toString` layout for the digits and exponent of a value: plain decimal for
/// 1e-3 <= |v| < 1e7, else `d.dddE±n`; at least one digit after the point either way.
fn java_layout(negative: bool, digits: &str, exponent: i32) -> String {
    let sign = if negative { "-" } else { "" };
    // `digits` is d1 d2 ... dn meaning 0.d1d2...dn * 10^(exponent + 1): d1 is at 10^exponent.
    if (-3..7).contains(&exponent) {
        let (int, frac) = if exponent >= 0 {
            let e = exponent as usize + 1;
            let padded = format!("{digits:0<e$}");
            let (i, f) = padded.split_at(e);
            (i.to_string(), f.to_string())
        } else {
            let zeros = "0".repeat((-exponent - 1) as usize);
            ("0".to_string(), format!("{zeros}{digits}"))
        };
        let frac = if frac.is_empty() {
            "0".to_string()
        } else {
            frac
        };
        format!("{sign}{int}.{frac}")
    } else {
        let (first, rest) = digits.split_at(1);
        let rest = if rest.is_empty() { "0" } else { rest };
        format!("{sign}{first}.{rest}E{exponent}")
    }
}

/// Splits Rust's `{:e}` text ("-1.2345e-7") into sign, significant digits and exponent.
fn sci_parts(text: &str) -> (bool, String, i32) {
    let negative = text.starts_with('-');
    let text = text.trim_start_matches('-');
    let (mantissa, exponent) = text.split_once('e').expect("scientific text");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    (
        negative,
        digits.to_string(),
        exponent.parse().expect("exponent"),
    )
}

/// The forms a converter may write a float in: Java's shortest layout, the longest digits
/// that still name one value (older JDKs print more digits than needed), Rust's plain
/// shortest text, and NaN/infinities as quoted strings (Jackson's default). `shortest` and
/// `longest` are the value in Rust's `{:e}` layout.
fn converter_texts(
    nan: bool,
    infinite: Option<bool>,
    shortest: &str,
    longest: &str,
    plain: String,
) -> Vec<String> {
    if nan {
        return vec!["\"NaN\"".into()];
    }
    if let Some(positive) = infinite {
        return vec![
            if positive {
                "\"Infinity\""
            } else {
                "\"-Infinity\""
            }
            .into(),
        ];
    }
    let (neg, digits, exp) = sci_parts(shortest);
    let (neg_l, digits_l, exp_l) = sci_parts(longest);
    vec![
        java_layout(neg, &digits, exp),
        java_layout(neg_l, &digits_l, exp_l),
        plain,
    ]
}

fn double_texts(v: f64) -> Vec<String> {
    let infinite = v.is_infinite().then_some(v > 0.0);
    converter_texts(
        v.is_nan(),
        infinite,
        &format!("{v:e}"),
        &format!("{v:.16e}"),
        format!("{v:?}"),
    )
}

fn float_texts(v: f32) -> Vec<String> {
    let infinite = v.is_infinite().then_some(v > 0.0);
    converter_texts(
        v.is_nan(),
        infinite,
        &format!("{v:e}"),
        &format!("{v:.8e}"),
        format!("{v:?}"),
    )
}

fn same_f64(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || a.is_nan() && b.is_nan()
}

fn same_f32(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || a.is_nan() && b.is_nan()
}

/// Values where parsing is hardest: subnormals, extremes, exact halves between neighbours.
fn edge_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        Just(5e-324),
        Just(-0.0),
        Just(0.0),
        Just(1.7976931348623157e308),
        Just(1.0e-5),
        Just(-944937.8255599217),
        Just(408874.45573021844),
        (1u64..(1 << 52)).prop_map(f64::from_bits),
        (-(1i64 << 62)..(1i64 << 62)).prop_map(|i| i as f64),
    ]
}

fn edge_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        any::<f32>(),
        Just(f32::MAX),
        Just(f32::MIN_POSITIVE),
        Just(1e-45),
        Just(-0.0),
        Just(3.4028235e38),
        (1u32..(1 << 23)).prop_map(f32::from_bits),
    ]
}

const DOUBLE: &str = r#"{"type":"double","optional":true,"field":"v"}"#;
const FLOAT: &str = r#"{"type":"float","optional":true,"field":"v"}"#;
const LONG: &str = r#"{"type":"int64","optional":true,"field":"v"}"#;

fn decimal_schema(scale: u32) -> String {
    format!(
        r#"{{"type":"bytes","optional":true,"name":"org.apache.kafka.connect.data.Decimal","version":1,"parameters":{{"scale":"{scale}","connect.decimal.precision":"38"}},"field":"v"}}"#
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn doubles_arrive_bit_exact(v in edge_f64()) {
        for text in double_texts(v) {
            for json in [record_json(DOUBLE, &text), schemaless_json(&text)] {
                // Without a schema a quoted NaN is a string: nothing says the column is a double.
                if text.starts_with('"') && !json.starts_with(r#"{"schema""#) {
                    continue;
                }
                let column = through_parquet(&json).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
                let got = column.as_primitive::<Float64Type>().value(0);
                prop_assert!(same_f64(got, v), "{text} became {got:?} ({:#x}), source {v:?} ({:#x})", got.to_bits(), v.to_bits());
            }
        }
    }

    #[test]
    fn floats_arrive_bit_exact(v in edge_f32()) {
        for text in float_texts(v) {
            let column = through_parquet(&record_json(FLOAT, &text)).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            let got = column.as_primitive::<Float32Type>().value(0);
            prop_assert!(same_f32(got, v), "{text} became {got:?} ({:#x}), source {v:?} ({:#x})", got.to_bits(), v.to_bits());
        }
    }

    #[test]
    fn longs_arrive_exact(v in prop_oneof![any::<i64>(), Just(i64::MAX), Just(i64::MIN), Just((1 << 53) + 1)]) {
        for json in [record_json(LONG, &v.to_string()), schemaless_json(&v.to_string())] {
            let column = through_parquet(&json).map_err(TestCaseError::fail)?;
            prop_assert_eq!(column.as_primitive::<Int64Type>().value(0), v);
        }
    }

    #[test]
    fn decimals_arrive_at_full_precision(
        digits in 1u32..=38,
        magnitude in any::<u128>(),
        negative in any::<bool>(),
        scale in 0u32..=38,
    ) {
        let unscaled = (magnitude % 10u128.pow(digits)) as i128 * if negative { -1 } else { 1 };
        let scale = scale.min(38);
        // The JsonConverter's default (decimal.format=BASE64): two's-complement big-endian
        // bytes of the unscaled value, minimal length.
        let bytes = unscaled.to_be_bytes();
        let skip = bytes
            .windows(2)
            .take_while(|w| (w[0] == 0x00 && w[1] & 0x80 == 0) || (w[0] == 0xff && w[1] & 0x80 != 0))
            .count();
        let base64 = format!("\"{}\"", base64::engine::general_purpose::STANDARD.encode(&bytes[skip..]));
        // decimal.format=NUMERIC: the plain decimal text with the column's scale.
        let text = logical::scaled_text(&num_bigint::BigInt::from(unscaled), scale as i32);
        for value in [base64, text.clone()] {
            let column = through_parquet(&record_json(&decimal_schema(scale), &value))
                .map_err(|e| TestCaseError::fail(format!("{value}: {e}")))?;
            let got = column.as_primitive::<Decimal128Type>();
            prop_assert_eq!(got.value(0), unscaled, "{} (scale {})", value, scale);
            prop_assert!(!got.is_null(0));
        }
    }
}

#[test]
fn the_values_that_once_moved_by_one_unit_arrive_exact() {
    // Seen in a real stream before serde_json parsed floats exactly: the table held ...216
    // and ...4184.
    for (text, bits) in [
        ("-944937.8255599217", (-944937.8255599217f64).to_bits()),
        ("408874.45573021844", 408874.45573021844f64.to_bits()),
    ] {
        let column = through_parquet(&record_json(DOUBLE, text)).unwrap();
        assert_eq!(
            column.as_primitive::<Float64Type>().value(0).to_bits(),
            bits,
            "{text}"
        );
    }
}

#[test]
fn a_float_close_to_the_midpoint_of_two_floats_rounds_once() {
    // 1 + 2^-24 + 2^-60 is just above the midpoint between 1.0f32 and its successor: the
    // nearest f32 is the successor. Through an f64 it first rounds to exactly the midpoint,
    // then (ties to even) down to 1.0: the double rounding exact parsing must avoid.
    let text = "1.000000059604644776151231";
    assert_eq!(
        text.parse::<f64>().unwrap() as f32,
        1.0,
        "the case rounds twice"
    );
    let column = through_parquet(&record_json(FLOAT, text)).unwrap();
    assert_eq!(
        column.as_primitive::<Float32Type>().value(0),
        f32::from_bits(1.0f32.to_bits() + 1)
    );
}

#[test]
fn java_layouts_are_what_java_prints() {
    assert_eq!(double_texts(1.0e-5)[0], "1.0E-5");
    assert_eq!(double_texts(f64::MAX)[0], "1.7976931348623157E308");
    assert_eq!(double_texts(100.0)[0], "100.0");
    assert_eq!(double_texts(0.001)[0], "0.001");
    assert_eq!(double_texts(1.0e7)[0], "1.0E7");
    assert_eq!(double_texts(-0.0)[0], "-0.0");
    assert_eq!(float_texts(2.71)[0], "2.71");
}

#[test]
fn java_two_digit_minimums_read_back() {
    // Java prints at least two digits: the smallest subnormals come out as 1.4E-45 (float)
    // and 4.9E-324 (double), not as the shortest one-digit text.
    let f = through_parquet(&record_json(FLOAT, "1.4E-45")).unwrap();
    assert_eq!(f.as_primitive::<Float32Type>().value(0).to_bits(), 1);
    let d = through_parquet(&record_json(DOUBLE, "4.9E-324")).unwrap();
    assert_eq!(d.as_primitive::<Float64Type>().value(0).to_bits(), 1);
}
