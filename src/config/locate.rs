//! Finds the line of a key path (`mqtt.port`) in the YAML text, so that problems found after parsing
//! can still point at a line. serde_yaml keeps no spans once a document is deserialized; for the block
//! style that config files use, indentation tells us where a key is.

/// Returns the 1-based (line, column) where the last key of `path` is written, or the deepest parent
/// that could be found.
pub fn locate(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    let mut found = None;
    let mut parent_indent: Option<usize> = None;
    let mut start = 0;
    let lines: Vec<&str> = text.lines().collect();
    'segments: for segment in path {
        for (index, line) in lines.iter().enumerate().skip(start) {
            let content = line.trim_start();
            let indent = line.len() - content.len();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            if parent_indent.is_some_and(|parent| indent <= parent) {
                break 'segments; // left the parent's block without finding the key
            }
            let key = content
                .strip_prefix(segment)
                .and_then(|rest| rest.strip_prefix(':'));
            if key.is_some() {
                found = Some((index + 1, indent + 1));
                parent_indent = Some(indent);
                start = index + 1;
                continue 'segments;
            }
        }
        break;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::locate;

    const TEXT: &str = "# comment\nmqtt:\n  host: x\n  port: 1\nrules:\n  dir: r\n  port: 2\n";

    #[test]
    fn finds_nested_keys_inside_their_parent() {
        assert_eq!(locate(TEXT, &["mqtt", "port"]), Some((4, 3)));
        assert_eq!(locate(TEXT, &["rules", "port"]), Some((7, 3)));
    }

    #[test]
    fn falls_back_to_the_parent() {
        assert_eq!(locate(TEXT, &["mqtt", "qos"]), Some((2, 1)));
        assert_eq!(locate(TEXT, &["broker"]), None);
    }
}
