//! The grammar of `log.level` (and `--log-level`). It lives with the config because the config
//! validates it; logging builds its filter with it and knows nothing else of the syntax.

use tracing_subscriber::filter::{LevelFilter, Targets};

/// Parses a log filter (`log.level`, `--log-level`): directives separated by commas, each a
/// level (`error`, `warn`, `info`, `debug`, `trace` or `off`: the default for every target) or
/// `target=level` (a module path and everything under it: `localhostd::kv=debug`; the longest
/// matching target wins). Stricter than tracing's own syntax, which reads any bare word as a
/// target: a misspelt level (`degub`) is refused here instead of turning every log off.
pub fn parse_log_filter(text: &str) -> Result<Targets, String> {
    let mut filter = Targets::new();
    let mut empty = true;
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        empty = false;
        filter = match directive.split_once('=') {
            None => filter.with_default(parse_level(directive)?),
            Some((target, level)) => {
                let target = target.trim();
                let sane = !target.is_empty()
                    && target
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-'));
                if !sane {
                    return Err(format!(
                        "{directive:?}: a target is a module path such as localhostd::kv"
                    ));
                }
                filter.with_target(target, parse_level(level.trim())?)
            }
        };
    }
    if empty {
        return Err("no directive: give a level such as info".into());
    }
    Ok(filter)
}

fn parse_level(text: &str) -> Result<LevelFilter, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a level: use error, warn, info, debug, trace or off"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn filters_take_levels_and_target_levels_and_refuse_the_rest() {
        let f = parse_log_filter("localhostd=debug, warn").unwrap();
        assert!(f.would_enable("localhostd::kv", &Level::DEBUG));
        assert!(!f.would_enable("localhostd::kv", &Level::TRACE));
        assert!(f.would_enable("hyper::proto", &Level::WARN));
        assert!(!f.would_enable("hyper::proto", &Level::INFO));
        // The longest matching target wins, in any order.
        let f = parse_log_filter("localhostd::kv=trace,localhostd=error").unwrap();
        assert!(f.would_enable("localhostd::kv::log", &Level::TRACE));
        assert!(!f.would_enable("localhostd::db", &Level::WARN));
        assert!(
            !f.would_enable("hyper", &Level::ERROR),
            "no default: other targets are off"
        );
        let f = parse_log_filter("INFO").unwrap();
        assert!(f.would_enable("anything", &Level::INFO));
        assert!(!f.would_enable("anything", &Level::DEBUG));
        assert!(
            !parse_log_filter("off")
                .unwrap()
                .would_enable("x", &Level::ERROR)
        );

        for (bad, says) in [
            ("", "no directive"),
            (" , ", "no directive"),
            ("degub", "is not a level"),
            ("localhostd=loud", "is not a level"),
            ("[[[", "is not a level"),
            ("=info", "a target is a module path"),
            ("local host=info", "a target is a module path"),
            ("a=b=c", "is not a level"),
        ] {
            let e = parse_log_filter(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }
}
