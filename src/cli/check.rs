//! `canaryd check PATH…`: the SRE's first tool, like `promtool check rules`.

use clap::Args;

use crate::rules::load_paths;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Rule files, folders or globs.
    #[arg(required = true)]
    pub paths: Vec<String>,
}

/// Prints every error and a summary; returns the exit code.
pub fn run(args: &CheckArgs) -> i32 {
    let (rules, errors) = load_paths(&args.paths);
    for e in &errors {
        eprintln!("{e}");
    }
    for r in &rules {
        for w in &r.warnings {
            eprintln!(
                "{}:{}:{}: warning: {}",
                w.file.display(),
                w.line,
                w.column,
                w.message
            );
        }
        println!(
            "{}: rule {:?} OK ({} steps, {} metrics)",
            r.path.display(),
            r.name(),
            r.steps().len(),
            r.metrics().len()
        );
    }
    // Template files have no rule to list; say they were read, so a misplaced one shows.
    for path in crate::rules::load::expand_paths(&args.paths).unwrap_or_default() {
        if crate::rules::load::is_template_file(&path) && !errors.iter().any(|e| e.file == path) {
            println!("{}: metric templates OK", path.display());
        }
    }
    if errors.is_empty() {
        0
    } else {
        eprintln!("{} error(s)", errors.len());
        1
    }
}
