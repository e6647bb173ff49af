//! Environment overrides: `FLOE_<SECTION>__<KEY>[__<KEY>...]=value` sets `section.key...`.
//!
//! Containers and the Helm chart pass secrets this way instead of templating TOML. Path segments
//! are lowercased. Inside `kafka.properties` (librdkafka property names, which use dots) a
//! single `_` stands for `.`: `FLOE_KAFKA__PROPERTIES__SASL_PASSWORD` sets `sasl.password`.
//!
//! A value takes the type of the value it replaces; a new key is read as a boolean, an integer,
//! a TOML array or inline table when it looks like one, and as a string otherwise.

use super::ConfigError;

pub const ENV_PREFIX: &str = "FLOE_";

/// Merges the `FLOE_` variables into `tree`; returns the names of the variables applied, in a
/// stable order, so errors can say the value came from the environment.
pub(super) fn apply_overrides(
    tree: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<String>, ConfigError> {
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX) && name.contains("__"))
        .collect();
    vars.sort();
    let mut applied = Vec::with_capacity(vars.len());
    for (name, value) in vars {
        let path = key_path(&name)?;
        set_path(tree, &path, &value).map_err(|message| ConfigError::Env {
            var: name.clone(),
            message,
        })?;
        applied.push(name);
    }
    Ok(applied)
}

fn key_path(var: &str) -> Result<Vec<String>, ConfigError> {
    let rest = &var[ENV_PREFIX.len()..];
    let mut path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    if path.iter().any(String::is_empty) {
        return Err(ConfigError::Env {
            var: var.to_string(),
            message: "empty key segment; expected FLOE_<SECTION>__<KEY>".into(),
        });
    }
    if path.len() > 2 && path[0] == "kafka" && path[1] == "properties" {
        let property = path[2..].join("_").replace('_', ".");
        path.truncate(2);
        path.push(property);
    }
    Ok(path)
}

fn set_path(tree: &mut toml::Table, path: &[String], raw: &str) -> Result<(), String> {
    let (last, parents) = path
        .split_last()
        .expect("key_path never returns an empty path");
    let mut table = tree;
    let mut walked = Vec::new();
    for segment in parents {
        walked.push(segment.as_str());
        let entry = table
            .entry(segment.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(format!(
                    "`{}` is not a table in the config file, so it cannot have keys",
                    walked.join(".")
                ));
            }
        };
    }
    let value = match table.get(last) {
        Some(existing) => coerce_like(existing, raw)?,
        None => infer(raw),
    };
    table.insert(last.clone(), value);
    Ok(())
}

fn coerce_like(existing: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    use toml::Value;
    Ok(match existing {
        Value::String(_) => Value::String(raw.to_string()),
        Value::Integer(_) => Value::Integer(
            raw.trim()
                .parse()
                .map_err(|_| format!("expected an integer, got {raw:?}"))?,
        ),
        Value::Float(_) => Value::Float(
            raw.trim()
                .parse()
                .map_err(|_| format!("expected a number, got {raw:?}"))?,
        ),
        Value::Boolean(_) => Value::Boolean(
            parse_bool(raw).ok_or_else(|| format!("expected true or false, got {raw:?}"))?,
        ),
        Value::Array(_) | Value::Table(_) => parse_inline(raw)
            .ok_or_else(|| format!("expected a TOML array or table, got {raw:?}"))?,
        Value::Datetime(_) => Value::String(raw.to_string()),
    })
}

fn infer(raw: &str) -> toml::Value {
    if let Some(b) = parse_bool(raw) {
        return toml::Value::Boolean(b);
    }
    if let Ok(i) = raw.trim().parse::<i64>() {
        return toml::Value::Integer(i);
    }
    let trimmed = raw.trim_start();
    if (trimmed.starts_with('[') || trimmed.starts_with('{'))
        && let Some(v) = parse_inline(raw)
    {
        return v;
    }
    toml::Value::String(raw.to_string())
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn parse_inline(raw: &str) -> Option<toml::Value> {
    let doc: toml::Table = format!("v = {raw}").parse().ok()?;
    doc.get("v").cloned()
}
