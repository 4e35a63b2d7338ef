//! Just enough of an XML writer for the timeline: elements, attributes and text, all escaped,
//! with open elements tracked so the document is always well formed.

use std::fmt::Write as _;

/// Escapes text for use in element content and in double- or single-quoted attributes.
pub(super) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            // Control characters other than tab and newline are not allowed in XML 1.0.
            c if c.is_control() && c != '\t' && c != '\n' => escaped.push(' '),
            c => escaped.push(c),
        }
    }
    escaped
}

/// A coordinate or length with at most one decimal, so long runs stay small on disk.
pub(super) fn num(value: f64) -> String {
    let rounded = (value * 10.0).round() / 10.0;
    if rounded == 0.0 {
        // Also turns -0 into 0.
        "0".to_owned()
    } else if rounded == rounded.trunc() {
        format!("{rounded:.0}")
    } else {
        format!("{rounded:.1}")
    }
}

/// Writes an XML document element by element; whatever is still open is closed by `finish`.
#[derive(Debug, Default)]
pub(super) struct XmlWriter {
    out: String,
    open: Vec<&'static str>,
}

impl XmlWriter {
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// Opens an element that will hold children, closed by [`XmlWriter::close`].
    pub(super) fn open(&mut self, name: &'static str, attrs: &[(&str, &str)]) {
        self.start_tag(name, attrs);
        self.out.push_str(">\n");
        self.open.push(name);
    }

    pub(super) fn close(&mut self) {
        if let Some(name) = self.open.pop() {
            let _ = writeln!(self.out, "</{name}>");
        }
    }

    /// An element without children.
    pub(super) fn empty(&mut self, name: &'static str, attrs: &[(&str, &str)]) {
        self.start_tag(name, attrs);
        self.out.push_str("/>\n");
    }

    /// An element holding only text.
    pub(super) fn text(&mut self, name: &'static str, attrs: &[(&str, &str)], text: &str) {
        self.start_tag(name, attrs);
        let _ = writeln!(self.out, ">{}</{name}>", escape(text));
    }

    /// An element without other children than a `<title>`, which viewers show on hover.
    pub(super) fn with_tooltip(&mut self, name: &'static str, attrs: &[(&str, &str)], tip: &str) {
        self.start_tag(name, attrs);
        let _ = writeln!(self.out, "><title>{}</title></{name}>", escape(tip));
    }

    /// Raw markup the caller built from constants (a style sheet); never pass data here.
    pub(super) fn raw(&mut self, markup: &str) {
        self.out.push_str(markup);
    }

    pub(super) fn finish(mut self) -> String {
        while !self.open.is_empty() {
            self.close();
        }
        self.out
    }

    fn start_tag(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.out.push('<');
        self.out.push_str(name);
        for (key, value) in attrs {
            let _ = write!(self.out, " {key}=\"{}\"", escape(value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_in_text_and_attributes() {
        let mut xml = XmlWriter::new();
        xml.open("g", &[("id", "a\"b")]);
        xml.text("text", &[], "x < y & z");
        xml.with_tooltip("rect", &[], "<b>");
        let doc = xml.finish();
        assert_eq!(
            doc,
            "<g id=\"a&quot;b\">\n<text>x &lt; y &amp; z</text>\n\
             <rect><title>&lt;b&gt;</title></rect>\n</g>\n"
        );
    }

    #[test]
    fn numbers_keep_one_decimal() {
        assert_eq!(num(12.0), "12");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(-0.04), "0");
    }
}
