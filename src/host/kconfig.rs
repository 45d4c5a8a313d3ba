//! Kconfig `.config` files (BusyBox's and the kernel's): the one parser.

use std::collections::BTreeMap;

/// `CONFIG_X` → `Some(value)` for set options, `None` for `# CONFIG_X is not set` and `=n`.
/// Values are kept as written (strings keep their quotes).
pub fn parse(text: &str) -> BTreeMap<String, Option<String>> {
    options(text).map(|(name, value)| (name.to_string(), value.map(str::to_string))).collect()
}

/// Only the options that are set: `CONFIG_X` → value.
pub fn set_options(text: &str) -> BTreeMap<String, String> {
    let mut set = BTreeMap::new();
    for (name, value) in options(text) {
        match value {
            Some(value) => set.insert(name.to_string(), value.to_string()),
            None => set.remove(name),
        };
    }
    set
}

/// Each option line of `text` in order, as [`parse`] reads it, borrowed from `text`; a later
/// line for the same option wins.
pub fn options(text: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    text.lines().map(str::trim).filter_map(|line| {
        if let Some(name) = line.strip_prefix("# ").and_then(|l| l.strip_suffix(" is not set")) {
            name.starts_with("CONFIG_").then_some((name, None))
        } else {
            let (name, value) = line.split_once('=')?;
            let value = value.trim();
            (name.starts_with("CONFIG_") && !line.starts_with('#'))
                .then(|| (name.trim(), (value != "n").then_some(value)))
        }
    })
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
        // A later line wins, either way.
        let set = set_options("CONFIG_A=y\n# CONFIG_A is not set\nCONFIG_B=n\nCONFIG_B=m\n");
        assert_eq!(set.into_iter().collect::<Vec<_>>(), [("CONFIG_B".into(), "m".into())]);
    }
}
