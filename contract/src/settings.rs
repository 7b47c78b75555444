//! Typed settings read once from the environment. A bad value is a clear message and exit 64
//! (EX_USAGE), never a silent default.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("invalid setting {name}={value:?}: {reason}")]
pub struct SettingsError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

impl SettingsError {
    pub fn new(name: &'static str, value: impl Into<String>, reason: impl fmt::Display) -> Self {
        Self {
            name,
            value: value.into(),
            reason: reason.to_string(),
        }
    }
}

/// The raw value, with empty treated as unset.
pub fn raw(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

pub fn string(name: &'static str, default: &str) -> String {
    raw(name).unwrap_or_else(|| default.to_owned())
}

pub fn parse<T>(name: &'static str, default: T) -> Result<T, SettingsError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    match raw(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|e| SettingsError::new(name, v.clone(), e)),
    }
}

pub fn optional<T>(name: &'static str) -> Result<Option<T>, SettingsError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    match raw(name) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| SettingsError::new(name, v.clone(), e)),
    }
}

/// `1`, `true`, `yes`, `on` (any case) are true; `0`, `false`, `no`, `off` false.
pub fn flag(name: &'static str, default: bool) -> Result<bool, SettingsError> {
    match raw(name) {
        None => Ok(default),
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(SettingsError::new(name, v, "expected 1/0, true/false")),
        },
    }
}

/// A duration in milliseconds.
pub fn millis(name: &'static str, default_ms: u64) -> Result<Duration, SettingsError> {
    parse::<u64>(name, default_ms).map(Duration::from_millis)
}

/// Print the error and exit 64, the convention for a usage / configuration error.
pub fn exit_on_error<T>(result: Result<T, SettingsError>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => {
            eprintln!("configuration error: {e}");
            std::process::exit(64);
        }
    }
}
