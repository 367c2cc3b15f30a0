//! Where a large rule file may be cut into pieces of whole top-level statements.
//!
//! Rhai's parser checks every variable a closure reads against every function compiled so far, and
//! each closure is a function: a file of n closures compiles in time growing with n², so a 5 MB file of
//! 45,000 triggers took half a minute. A large file is therefore compiled and run a piece at a time
//! (see `RuleSet::load_file`), each piece starting after a `;` that ends a line at the top level.
//! Finding those needs only Rhai's brackets, strings, characters, templates and comments.

/// About how many bytes one piece holds: large enough that few pieces are compiled, small enough that
/// the parser's look-ups within one stay cheap.
pub const PIECE_BYTES: usize = 64 << 10;

/// A file shorter than this is compiled whole, as before: the pieces only pay off for large files.
pub const WHOLE_BELOW: usize = 4 * PIECE_BYTES;

enum Frame {
    /// Code, with its open brackets; the bottom frame is the file's top level.
    Code(usize),
    /// Inside a `` `template` ``.
    Template,
}

/// Where each piece of `text` starts: its byte offset and its line (from 1). One piece, at (0, 1), for
/// a text shorter than [`WHOLE_BELOW`] or one with nowhere to cut.
pub fn pieces(text: &str) -> Vec<(usize, usize)> {
    let mut pieces = vec![(0, 1)];
    if text.len() < WHOLE_BELOW {
        return pieces;
    }
    let bytes = text.as_bytes();
    let mut stack = vec![Frame::Code(0)];
    let mut line = 1;
    let mut ended = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        if c == b'\n' {
            line += 1;
        }
        let nested = stack.len() > 1;
        match stack.last_mut() {
            Some(Frame::Template) => match c {
                b'\\' => {
                    i += 1;
                    if bytes.get(i) == Some(&b'\n') {
                        line += 1;
                    }
                }
                b'`' => {
                    stack.pop();
                }
                b'$' if next == Some(b'{') => {
                    stack.push(Frame::Code(0));
                    i += 1;
                }
                _ => {}
            },
            Some(Frame::Code(depth)) => match c {
                b'\n' => {
                    let start = pieces.last().map_or(0, |p| p.0);
                    if ended && !nested && i + 1 - start >= PIECE_BYTES && i + 1 < bytes.len() {
                        pieces.push((i + 1, line));
                    }
                    ended = false;
                }
                b' ' | b'\t' | b'\r' => {}
                b';' => ended = *depth == 0,
                b'(' | b'[' | b'{' => {
                    *depth += 1;
                    ended = false;
                }
                b'}' if *depth == 0 && nested => {
                    stack.pop();
                    ended = false;
                }
                b')' | b']' | b'}' => {
                    *depth = depth.saturating_sub(1);
                    ended = false;
                }
                b'/' if next == Some(b'/') => {
                    // To the end of the line, which is then seen as any other.
                    while i + 1 < bytes.len() && bytes[i + 1] != b'\n' {
                        i += 1;
                    }
                }
                b'/' if next == Some(b'*') => {
                    // Rhai's block comments nest.
                    let mut open = 1;
                    i += 2;
                    while i < bytes.len() && open > 0 {
                        match (bytes[i], bytes.get(i + 1).copied()) {
                            (b'/', Some(b'*')) => {
                                open += 1;
                                i += 1;
                            }
                            (b'*', Some(b'/')) => {
                                open -= 1;
                                i += 1;
                            }
                            (b'\n', _) => line += 1,
                            _ => {}
                        }
                        i += 1;
                    }
                    ended = false;
                    continue;
                }
                b'"' | b'\'' => {
                    i += 1;
                    while i < bytes.len() && bytes[i] != c {
                        if bytes[i] == b'\\' {
                            i += 1;
                        }
                        if bytes.get(i) == Some(&b'\n') {
                            line += 1;
                        }
                        i += 1;
                    }
                    ended = false;
                }
                b'`' => {
                    stack.push(Frame::Template);
                    ended = false;
                }
                _ => ended = false,
            },
            None => return vec![(0, 1)],
        }
        i += 1;
    }
    if stack.len() != 1 {
        // Unbalanced: let the whole file's compilation report it where it is.
        return vec![(0, 1)];
    }
    pieces
}

/// Piece `index` of `text`, after as many blank lines as it starts below line 1, so Rhai reports the
/// file's own lines and columns, and names its closures as it would in the whole file.
pub fn padded(text: &str, pieces: &[(usize, usize)], index: usize) -> String {
    let (start, line) = pieces[index];
    let end = pieces.get(index + 1).map_or(text.len(), |p| p.0);
    let mut piece = "\n".repeat(line - 1);
    piece.push_str(&text[start..end]);
    piece
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(statement: &str) -> Vec<String> {
        let mut text = String::new();
        while text.len() < WHOLE_BELOW + PIECE_BYTES {
            text.push_str(statement);
        }
        let pieces = pieces(&text);
        (0..pieces.len()).map(|i| padded(&text, &pieces, i)).collect()
    }

    #[test]
    fn pieces_join_to_the_file_and_start_on_their_lines() {
        let text: String = (0..20_000).map(|i| format!("let a{i} = {i};\n")).collect();
        let pieces = pieces(&text);
        assert!(pieces.len() > 3, "{pieces:?}");
        let joined: String = (0..pieces.len())
            .map(|i| padded(&text, &pieces, i).trim_start_matches('\n').to_string())
            .collect();
        assert_eq!(joined, text);
        for (start, line) in &pieces {
            assert_eq!(text[..*start].matches('\n').count() + 1, *line);
        }
    }

    #[test]
    fn never_inside_brackets_strings_templates_or_comments() {
        for statement in [
            "on_message(\"a\", |m| {\n    let x = 1;\n    publish(\"b\", x);\n});\n",
            "let s = \"one;\n two\";\n",
            "let c = [';',\n '\\'', ';'];\n",
            "let t = `a ${ \"x;\" + `in ${1}` } b;\nc`;\n",
            "/* a; /* nested; */\n still; */ let z = 1;\n",
            "let m = #{ a: 1,\n b: 2 }; // end;\n",
        ] {
            for piece in cut(statement) {
                let piece = piece.trim_start_matches('\n');
                assert!(
                    piece.starts_with(statement),
                    "{statement:?} cut at {:?}",
                    &piece[..40.min(piece.len())]
                );
            }
        }
    }

    #[test]
    fn small_or_unbalanced_files_stay_whole() {
        assert_eq!(pieces("let a = 1;\n"), vec![(0, 1)]);
        let mut text = "let s = `".to_string();
        while text.len() < WHOLE_BELOW + PIECE_BYTES {
            text.push_str("x;\n");
        }
        assert_eq!(pieces(&text), vec![(0, 1)]);
    }
}
