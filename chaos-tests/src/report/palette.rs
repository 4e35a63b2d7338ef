//! Colours of fault kinds on the timeline.

use std::collections::BTreeSet;

use super::model::FaultRecord;

/// A colour per fault kind: the same family for the same sort of fault in every run (kills
/// red, pauses orange, partitions purple, disk loss brown), shades within a family.
#[derive(Debug)]
pub(super) struct KindPalette {
    /// Kind and colour, sorted by kind; the position is the kind's CSS class (`k0`, ...).
    kinds: Vec<(String, String)>,
}

impl KindPalette {
    pub(super) fn new(faults: &[FaultRecord]) -> Self {
        type Family = (&'static [&'static str], f64, f64, f64);
        const FAMILIES: [Family; 5] = [
            (&["kill", "crash"], 0.0, 72.0, 46.0),
            (&["pause", "stop", "freeze"], 30.0, 95.0, 48.0),
            (&["partition", "link", "isolat"], 275.0, 50.0, 52.0),
            (&["wipe", "disk"], 15.0, 38.0, 38.0),
            (&["clock", "slow", "delay", "latency"], 190.0, 70.0, 40.0),
        ];
        const OTHER_HUES: [f64; 4] = [320.0, 55.0, 170.0, 230.0];
        const SHADES: [f64; 5] = [0.0, 14.0, -10.0, 24.0, -16.0];
        let distinct: BTreeSet<&str> = faults.iter().map(|fault| fault.kind.as_str()).collect();
        let mut per_family = [0usize; FAMILIES.len()];
        let mut others = 0usize;
        let kinds = distinct
            .into_iter()
            .map(|kind| {
                let lower = kind.to_lowercase();
                let family = FAMILIES
                    .iter()
                    .position(|(words, ..)| words.iter().any(|word| lower.contains(word)));
                let (hue, saturation, lightness) = match family {
                    Some(family) => {
                        let (_, hue, saturation, lightness) = FAMILIES[family];
                        let shade = SHADES[per_family[family] % SHADES.len()];
                        per_family[family] += 1;
                        (hue, saturation, lightness + shade)
                    }
                    None => {
                        let hue = OTHER_HUES[others % OTHER_HUES.len()];
                        let shade = SHADES[(others / OTHER_HUES.len()) % SHADES.len()];
                        others += 1;
                        (hue, 60.0, 42.0 + shade)
                    }
                };
                (kind.to_owned(), hsl_to_hex(hue, saturation, lightness))
            })
            .collect();
        Self { kinds }
    }

    /// The CSS class of a kind (`k0`, `k1`, ...), which sets its colour.
    pub(super) fn class(&self, kind: &str) -> String {
        let index = self
            .kinds
            .iter()
            .position(|(known, _)| known == kind)
            .unwrap_or(0);
        format!("k{index}")
    }

    pub(super) fn len(&self) -> usize {
        self.kinds.len()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, &str, &str)> {
        self.kinds
            .iter()
            .enumerate()
            .map(|(index, (kind, colour))| (index, kind.as_str(), colour.as_str()))
    }
}

fn hsl_to_hex(hue: f64, saturation: f64, lightness: f64) -> String {
    let (s, l) = (saturation / 100.0, (lightness / 100.0).clamp(0.0, 1.0));
    let chroma = (1.0 - (2.0 * l - 1.0).abs()) * s;
    let h = hue.rem_euclid(360.0) / 60.0;
    let x = chroma * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (chroma, x, 0.0),
        1 => (x, chroma, 0.0),
        2 => (0.0, chroma, x),
        3 => (0.0, x, chroma),
        4 => (x, 0.0, chroma),
        _ => (chroma, 0.0, x),
    };
    let m = l - chroma / 2.0;
    let byte = |v: f64| ((v + m).clamp(0.0, 1.0) * 255.0).round() as u8;
    format!("#{:02x}{:02x}{:02x}", byte(r), byte(g), byte(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsl_converts_to_hex() {
        assert_eq!(hsl_to_hex(0.0, 100.0, 50.0), "#ff0000");
        assert_eq!(hsl_to_hex(120.0, 100.0, 25.0), "#008000");
        assert_eq!(hsl_to_hex(0.0, 0.0, 100.0), "#ffffff");
    }
}
