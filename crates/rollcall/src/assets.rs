//! The hidden `assets` subcommand (cargo feature `assets`): writes the man
//! pages (clap_mangen) and the shell completions (clap_complete) from the
//! binary's own clap definitions, so they cannot drift from `--help`.
//! scripts/package.sh runs it and puts the files in the Debian package.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

/// `rollcall assets`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The folder to write `man/` and `completions/` into.
    #[arg(long)]
    out: PathBuf,
}

/// Writes `man/rollcall.1`, `man/rollcall-SUB.1` for each visible
/// subcommand, and `completions/` for bash, zsh and fish.
pub fn run<C: CommandFactory>(args: Args) -> Result<()> {
    let mut command = C::command();
    command.build();
    let man = args.out.join("man");
    let completions = args.out.join("completions");
    for dir in [&man, &completions] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_man(&man.join("rollcall.1"), command.clone())?;
    // `help` is clap's own, and says nothing the pages do not.
    let pages = command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help");
    for sub in pages {
        // Named as man(1) finds them and as Debian's other tools do (git-log(1)).
        let name = format!("rollcall-{}", sub.get_name());
        // clap takes a command's name as &'static str (no `string` feature);
        // a handful of short strings, once, in a tool that then exits.
        let static_name: &'static str = Box::leak(name.clone().into_boxed_str());
        let page = sub.clone().name(static_name).display_name(name.clone());
        write_man(&man.join(format!("{name}.1")), page)?;
    }
    for (shell, file) in [
        (Shell::Bash, "rollcall"),
        (Shell::Zsh, "_rollcall"),
        (Shell::Fish, "rollcall.fish"),
    ] {
        let path = completions.join(file);
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut command.clone(), "rollcall", &mut out);
        fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("wrote {} and {}", man.display(), completions.display());
    Ok(())
}

fn write_man(path: &Path, command: clap::Command) -> Result<()> {
    let mut out = Vec::new();
    clap_mangen::Man::new(command)
        .render(&mut out)
        .with_context(|| format!("rendering {}", path.display()))?;
    fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}
