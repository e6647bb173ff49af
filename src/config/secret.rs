//! A string that must never reach a log line, an error message or `Debug` output.

use std::fmt;

use serde::Deserialize;

/// A secret value (password, token, client secret). `Debug` and `Display` print `***`; only
/// [`Secret::expose`] gives the value, at the one place that hands it to a client library.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // An all-digit secret set through the environment arrives as an integer.
        Ok(Secret(super::raw::Scalar::deserialize(d)?.0))
    }
}
