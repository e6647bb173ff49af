//! Table and namespace names as catalogs accept them. S3 Tables allows lowercase letters,
//! digits and underscores (and a name must start with a letter or digit); Floe normalises
//! every configured or derived name to that, for every backend, so a table keeps its name when
//! a deployment moves between catalogs.

use std::collections::HashMap;
use std::fmt;

use crate::config::TableName;

/// A normalised `namespace.table`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableIdent {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for TableIdent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.namespace, self.name)
    }
}

impl TableIdent {
    /// Normalises both parts; fails on a name with nothing usable in it.
    pub fn normalised(table: &TableName) -> Result<Self, String> {
        Ok(TableIdent {
            namespace: normalise("namespace", &table.namespace)?,
            name: normalise("table", &table.name)?,
        })
    }
}

/// Lowercases, turns every other character than `[a-z0-9_]` into `_`, and trims leading
/// underscores (names must start with a letter or digit).
pub fn normalise(what: &str, raw: &str) -> Result<String, String> {
    let mapped: String = raw
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = mapped.trim_start_matches('_').to_string();
    if trimmed.is_empty() {
        return Err(format!(
            "{what} name {raw:?} has no letter or digit, so it cannot be a catalog name"
        ));
    }
    if trimmed.len() > 255 {
        return Err(format!("{what} name {raw:?} is longer than 255 characters"));
    }
    Ok(trimmed)
}

/// Remembers which source name each normalised name came from, so two different source tables
/// never silently write into one catalog table.
#[derive(Debug, Default)]
pub struct NameRegistry {
    seen: HashMap<TableIdent, TableName>,
}

impl NameRegistry {
    pub fn resolve(&mut self, table: &TableName) -> Result<TableIdent, String> {
        let ident = TableIdent::normalised(table)?;
        match self.seen.get(&ident) {
            Some(first) if first != table => Err(format!(
                "tables {first} and {table} both become {ident} under the catalog's naming rules \
                 (lowercase letters, digits, underscores); route one of them to another name in \
                 [[tables.route]]"
            )),
            Some(_) => Ok(ident),
            None => {
                self.seen.insert(ident.clone(), table.clone());
                Ok(ident)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> TableName {
        s.parse().unwrap()
    }

    #[test]
    fn names_become_lowercase_letters_digits_and_underscores() {
        let ident = TableIdent::normalised(&name("Inventory.Customer-Orders")).unwrap();
        assert_eq!(ident.to_string(), "inventory.customer_orders");
        assert_eq!(normalise("table", "_Ünïcode$2").unwrap(), "n_code_2");
        assert!(
            normalise("table", "--")
                .unwrap_err()
                .contains("no letter or digit")
        );
    }

    #[test]
    fn collisions_are_refused_with_both_names() {
        let mut registry = NameRegistry::default();
        registry.resolve(&name("inv.Orders")).unwrap();
        registry.resolve(&name("inv.Orders")).unwrap();
        let err = registry.resolve(&name("inv.orders")).unwrap_err();
        assert!(
            err.contains("inv.Orders and inv.orders both become inv.orders"),
            "{err}"
        );
    }
}
