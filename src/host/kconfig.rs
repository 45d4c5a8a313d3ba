//! Kconfig `.config` files (BusyBox's and the kernel's): the one parser.

use std::collections::BTreeMap;

/// `CONFIG_X` → `Some(value)` for set options, `None` for `# CONFIG_X is not set` and `=n`.
/// Values are kept as written (strings keep their quotes).
pub fn parse(text: &str) -> BTreeMap<String, Option<String>> {
    let mut options = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("# ").and_then(|l| l.strip_suffix(" is not set")) {
            if name.starts_with("CONFIG_") {
                options.insert(name.to_string(), None);
            }
        } else if let Some((name, value)) = line.split_once('=') {
            if name.starts_with("CONFIG_") && !line.starts_with('#') {
                let value = value.trim();
                options.insert(name.trim().to_string(), (value != "n").then(|| value.to_string()));
            }
        }
    }
    options
}

/// Only the options that are set: `CONFIG_X` → value.
pub fn set_options(text: &str) -> BTreeMap<String, String> {
    parse(text).into_iter().filter_map(|(name, value)| Some((name, value?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_with_not_set_and_n_as_unset() {
        let text = "#\n# General\n#\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=n\n\
                    CONFIG_S=\"a=b\"\n# CONFIG_D=y is a comment\n";
        let o = parse(text);
        assert_eq!(o["CONFIG_A"].as_deref(), Some("y"));
        assert_eq!(o["CONFIG_B"], None);
        assert_eq!(o["CONFIG_C"], None);
        assert_eq!(o["CONFIG_S"].as_deref(), Some("\"a=b\""));
        assert!(!o.contains_key("CONFIG_D"));
        let set = set_options(text);
        assert_eq!(set.keys().collect::<Vec<_>>(), ["CONFIG_A", "CONFIG_S"]);
    }
}
