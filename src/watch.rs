//! `siirto watch MIGRATION`: a migration's progress, live, until it settles. In a terminal,
//! progress bars (indicatif) for the transfer, the verification, the repoint and the notices,
//! and the accounts waiting for an operator printed above them as they change; in a pipe or a
//! file, a line each time the progress changes (`--json`: a [`Progress`] object a line). It
//! reads [`status::progress`], the query the status page's overview reads, and exits once the
//! migration is settled or aborted.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::status::{self, Progress};
use crate::store::Store;

/// Watches migration `id` every `interval` until it is settled or aborted.
pub async fn watch(store: &Store, id: &str, interval: Duration, json: bool) -> anyhow::Result<()> {
    let mut view = if json || !std::io::stderr().is_terminal() { View::Lines { json } } else { View::bars() };
    let mut last: Option<Progress> = None;
    loop {
        let progress = status::progress(store, id).await?;
        if last.as_ref() != Some(&progress) {
            view.show(&progress, last.as_ref())?;
        }
        if progress.finished {
            view.finish(&progress);
            return Ok(());
        }
        last = Some(progress);
        tokio::time::sleep(interval).await;
    }
}

/// Where the progress goes.
enum View {
    /// Progress bars on the terminal (stderr).
    Bars { multi: MultiProgress, bars: [ProgressBar; 4] },
    /// One line per change on stdout.
    Lines { json: bool },
}

impl View {
    fn bars() -> View {
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template("{prefix:>13} [{bar:40}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar = |name: &str| {
            let bar = multi.add(ProgressBar::new(0).with_style(style.clone()));
            bar.set_prefix(name.to_owned());
            bar
        };
        let bars = [bar("transferred"), bar("verified"), bar("repointed"), bar("notices sent")];
        View::Bars { multi, bars }
    }

    fn show(&mut self, progress: &Progress, last: Option<&Progress>) -> anyhow::Result<()> {
        match self {
            View::Lines { json: true } => println!("{}", serde_json::to_string(progress)?),
            View::Lines { json: false } => println!("{}", line(progress)),
            View::Bars { multi, bars } => {
                let figures = [
                    (progress.transferred, progress.accounts),
                    (progress.verified, progress.accounts),
                    (progress.repointed, progress.domains),
                    (progress.notices_sent, progress.notices),
                ];
                for (bar, (done, all)) in bars.iter().zip(figures) {
                    bar.set_length(all as u64);
                    bar.set_position(done as u64);
                }
                bars[0].set_message(format!("{} · {} arrived", progress.state, progress.arrived));
                // The held accounts above the bars, each once, as they come.
                for held in &progress.held {
                    if last.is_none_or(|last| !last.held.contains(held)) {
                        multi.println(held_line(held))?;
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(&self, progress: &Progress) {
        if let View::Bars { bars, .. } = self {
            for bar in bars {
                bar.finish();
            }
            eprintln!("{}", line(progress));
        }
    }
}

/// The progress in one line.
fn line(p: &Progress) -> String {
    let mut line = format!(
        "{}: accounts {}/{} arrived ({} transferred, {} verified) · domains {}/{} repointed · notices {}/{} sent",
        p.state,
        p.arrived,
        p.accounts,
        p.transferred,
        p.verified,
        p.repointed,
        p.domains,
        p.notices_sent,
        p.notices
    );
    for held in &p.held {
        line.push_str(" · ");
        line.push_str(&held_line(held));
    }
    line
}

fn held_line(held: &status::HeldAccount) -> String {
    match &held.reason {
        Some(reason) => format!("{} {}: {reason}", held.user, held.state),
        None => format!("{} {}", held.user, held.state),
    }
}
