//! TOML and type errors, as an operator reads them: the field path, what
//! was expected and the value written, and the line
//! (`listener[0].port: expected a number, got "80" at line 8`).

use serde::de::DeserializeOwned;

use super::ConfigError;

/// Deserializes `text`, or says which field is wrong and how.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let span = inner.span();
        let line = span
            .as_ref()
            .map(|s| text[..s.start].matches('\n').count() + 1);
        let written = span.map(|s| text[s].trim().to_string());
        ConfigError {
            // "." is the root: an error of the file as a whole.
            path: if path == "." || path.is_empty() {
                "config".into()
            } else {
                path
            },
            message: explain(inner.message(), written.as_deref()),
            line,
        }
    })
}

/// serde's wording, said with the value the operator wrote.
fn explain(msg: &str, written: Option<&str>) -> String {
    let written = written.unwrap_or("");
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        // "string \"80\", expected u32"
        if let Some((got, want)) = rest.split_once(", expected ") {
            let want = match want {
                w if w.starts_with('u') || w.starts_with('i') => "a number",
                "a boolean" => "true or false",
                "a string" | "string" => "a string",
                "a sequence" => "a list like [\"a\", \"b\"]",
                w => w,
            };
            let got = match got.split_once(' ') {
                Some(("string", v)) => v.to_string(),
                Some((_, v)) => v.trim_matches('`').to_string(),
                None => got.to_string(),
            };
            return format!("expected {want}, got {got}");
        }
    }
    if let Some(rest) = msg.strip_prefix("invalid value: integer `") {
        // "-1`, expected u32"
        if let Some((v, want)) = rest.split_once("`, expected ") {
            let range = if want.starts_with('u') {
                " (0 or more)"
            } else {
                ""
            };
            return format!("{v} is out of range{range}");
        }
    }
    if msg == "invalid IP address syntax" {
        return format!("{written} is not an IP address");
    }
    msg.to_string()
}

#[cfg(test)]
mod tests {
    use super::explain;

    #[test]
    fn serde_messages_are_said_with_the_value() {
        assert_eq!(
            explain("invalid type: string \"80\", expected u32", Some("\"80\"")),
            "expected a number, got \"80\""
        );
        assert_eq!(
            explain("invalid type: integer `80`, expected a string", Some("80")),
            "expected a string, got 80"
        );
        assert_eq!(
            explain("invalid value: integer `-1`, expected u32", Some("-1")),
            "-1 is out of range (0 or more)"
        );
        assert_eq!(
            explain("invalid IP address syntax", Some("\"10.1.0.300\"")),
            "\"10.1.0.300\" is not an IP address"
        );
    }
}
