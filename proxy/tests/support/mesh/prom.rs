//! Reading a proxy's `/metrics` (Prometheus text format) in assertions.

use std::collections::BTreeMap;

/// One scrape: every sample line, parsed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scrape {
    samples: Vec<Sample>,
}

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Scrape {
    pub(crate) fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(parse_line)
            .collect();
        Scrape { samples }
    }

    /// The sum of `name` over the series whose labels include every pair of `matching`; 0
    /// when there is none (as for a counter never incremented).
    pub(crate) fn sum(&self, name: &str, matching: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                matching
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|value| value == v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// The series of `name` as `labels => value` lines, for failure messages.
    pub(crate) fn describe(&self, name: &str) -> String {
        let lines: Vec<String> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| format!("{name}{:?} = {}", s.labels, s.value))
            .collect();
        if lines.is_empty() {
            format!("{name}: no series")
        } else {
            lines.join("\n")
        }
    }
}

/// `name{k="v",...} value [timestamp]` or `name value`. Label values in these tests never hold
/// quotes, commas or braces, which keeps the parser small.
fn parse_line(line: &str) -> Option<Sample> {
    let (series, rest) = match line.find('{') {
        Some(open) => {
            let close = line[open..].find('}')? + open;
            (&line[..close + 1], &line[close + 1..])
        }
        None => line.split_at(line.find(' ')?),
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, labels)) => {
            let labels = labels
                .trim_end_matches('}')
                .split(',')
                .filter(|pair| !pair.is_empty())
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    Some((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
                })
                .collect();
            (name.to_owned(), labels)
        }
        None => (series.to_owned(), BTreeMap::new()),
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_matching_series() {
        let scrape = Scrape::parse(
            "# TYPE x counter\n\
             x{direction=\"outbound\",service=\"shop/b\",status_class=\"2xx\"} 3\n\
             x{direction=\"outbound\",service=\"shop/b\",status_class=\"5xx\"} 1\n\
             x{direction=\"inbound\",service=\"local\",status_class=\"2xx\"} 7\n\
             y 2.5\n",
        );
        assert_eq!(scrape.sum("x", &[("service", "shop/b")]), 4.0);
        assert_eq!(scrape.sum("x", &[("direction", "inbound")]), 7.0);
        assert_eq!(scrape.sum("x", &[]), 11.0);
        assert_eq!(scrape.sum("y", &[]), 2.5);
        assert_eq!(scrape.sum("z", &[]), 0.0);
    }
}
