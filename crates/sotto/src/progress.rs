//! Progress bars on standard error: shown only on a terminal and without
//! `--quiet`.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use sotto_psi::steps::ProgressSink;

/// Creates one bar per phase.
pub struct Bars {
    enabled: bool,
}

impl Bars {
    /// Bars are enabled on a terminal unless `quiet`.
    pub fn new(quiet: bool) -> Self {
        Self {
            enabled: !quiet && std::io::stderr().is_terminal(),
        }
    }
}

impl ProgressSink for Bars {
    fn phase(&self, name: &'static str, total: u64) -> Box<dyn Fn(u64) + Sync + '_> {
        if !self.enabled {
            return Box::new(|_| {});
        }
        let bar = ProgressBar::new(total).with_message(name);
        let style = ProgressStyle::with_template(
            "{msg:32} [{bar:30}] {human_pos}/{human_len} {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        Box::new(move |n| {
            bar.inc(n);
            if bar.position() >= total {
                bar.finish();
            }
        })
    }
}
