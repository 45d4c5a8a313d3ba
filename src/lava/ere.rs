//! The translation of a check's Rust regex into a POSIX ERE for BusyBox's `grep -E` in the guest.

/// Rewrites a check's regular expression (Rust `regex` syntax, matched line by line) for
/// BusyBox's `grep -E` (POSIX ERE, with glibc's regcomp in a static BusyBox). Perl classes
/// become bracket expressions; constructs ERE has no equivalent for are refused with the
/// reason.
pub fn ere(pattern: &str) -> std::result::Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut prev_quantifier = false;
    while i < chars.len() {
        let c = chars[i];
        let mut quantifier = false;
        match c {
            '\\' => {
                let Some(&e) = chars.get(i + 1) else {
                    return Err("it ends with a lone backslash".into());
                };
                out.push_str(&perl_class(e, false)?);
                i += 1;
            }
            '[' => {
                let (class, next) = bracket(&chars, i)?;
                out.push_str(&class);
                i = next - 1;
            }
            '(' if chars.get(i + 1) == Some(&'?') => {
                if chars.get(i + 2) == Some(&':') {
                    out.push('(');
                    i += 2;
                } else {
                    return Err("flags and special groups `(?…)` have no ERE form".into());
                }
            }
            '*' | '+' | '?' | '}' => {
                if c == '?' && prev_quantifier {
                    return Err("lazy quantifiers (`*?`, `+?`, `??`) have no ERE form".into());
                }
                out.push(c);
                quantifier = true;
            }
            _ => out.push(c),
        }
        prev_quantifier = quantifier;
        i += 1;
    }
    Ok(out)
}

/// The ERE for the escape `\e`, outside (`in_bracket == false`) or inside a bracket
/// expression.
pub(super) fn perl_class(e: char, in_bracket: bool) -> std::result::Result<String, String> {
    let (outside, inside) = match e {
        'd' => ("[0-9]", "0-9"),
        'D' => ("[^0-9]", ""),
        's' => ("[[:space:]]", "[:space:]"),
        'S' => ("[^[:space:]]", ""),
        'w' => ("[[:alnum:]_]", "[:alnum:]_"),
        'W' => ("[^[:alnum:]_]", ""),
        't' => ("\t", "\t"),
        _ if e.is_ascii_punctuation() => {
            return Ok(match (in_bracket, e) {
                (true, ']' | '^' | '-' | '[') => {
                    return Err(format!("`\\{e}` inside a bracket expression has no ERE form"))
                }
                (true, _) => e.to_string(),
                // ERE's special characters keep their backslash; any other punctuation is
                // literal as it is.
                (false, '.' | '[' | ']' | '(' | ')' | '{' | '}' | '*' | '+' | '?' | '|' | '^')
                | (false, '$' | '\\') => format!("\\{e}"),
                (false, _) => e.to_string(),
            });
        }
        _ => return Err(format!("the escape `\\{e}` has no ERE form")),
    };
    let text = if in_bracket { inside } else { outside };
    if text.is_empty() {
        return Err(format!("a negated class `\\{e}` inside a bracket expression"));
    }
    Ok(text.to_string())
}

/// Copies the bracket expression starting at `chars[start] == '['`; returns it and the index
/// after its `]`.
pub(super) fn bracket(
    chars: &[char],
    start: usize,
) -> std::result::Result<(String, usize), String> {
    let mut out = String::from("[");
    let mut i = start + 1;
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    // A `]` first is literal.
    if chars.get(i) == Some(&']') {
        out.push(']');
        i += 1;
    }
    while let Some(&c) = chars.get(i) {
        match c {
            ']' => return Ok((out + "]", i + 1)),
            '\\' => {
                let e = *chars.get(i + 1).ok_or("it ends inside a bracket expression")?;
                out.push_str(&perl_class(e, true)?);
                i += 2;
            }
            '[' if chars.get(i + 1) == Some(&':') => {
                let end = (i + 2..chars.len().saturating_sub(1))
                    .find(|&j| chars[j] == ':' && chars[j + 1] == ']')
                    .ok_or("an unterminated `[:class:]`")?;
                out.extend(&chars[i..end + 2]);
                i = end + 2;
            }
            '[' => return Err("nested or set-operation brackets have no ERE form".into()),
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Err("an unterminated bracket expression".into())
}
