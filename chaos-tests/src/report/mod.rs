//! The report of a run: `report.json` (every figure), `summary.txt` (a short text an operator
//! reads first) and `timeline.svg` (leader of each term over time, faults, write rate).

mod format;
pub mod model;
mod palette;
pub mod render;
pub mod summary;
pub mod svg;
#[cfg(test)]
mod test_support;
mod xml;

pub use model::*;
pub use render::{ReportError, ReportFiles, read_report, write_report};
pub use summary::summary;
pub use svg::timeline_svg;
