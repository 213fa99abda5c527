//! The configuration file (`--config PATH` or `OMS_GATEWAY_CONFIG`) and `--print-config`.
//!
//! The file is one flat TOML table whose keys are the long flag names (`listen`,
//! `oms-base-url`, `drain-delay`, `insecure-allow-unauthenticated`, ...), so a flag added to the
//! command line is a key of the file with no code here. It is read before clap parses: each key
//! is checked against the flags (an unknown key, a value of the wrong TOML type or one the flag's
//! own parser refuses is an error naming the file, the line and the key), and each key whose flag
//! is neither on the command line nor set in the environment is handed to clap as `--key=value`.
//! So the precedence is flag > env > file > default, and a file value takes part in clap's
//! `requires`/`conflicts_with` checks exactly as the flag would (clap ignores defaults there).
//!
//! `--print-config` prints every setting, its effective value and where it came from, as TOML
//! that can be fed back with `--config`; a secret (a flag whose env value `--help` hides, or whose
//! name says secret, token or password) is printed only as a comment, `[redacted]`, and a URL
//! that carries a password only as a comment, its password masked (`redact::url`).

use super::{Cli, redact};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Args, CommandFactory, FromArgMatches};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

/// The flags of the configuration file itself (flattened into [`Cli`]).
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigFileArgs {
    /// A TOML configuration file whose keys are the long flag names (e.g. `listen =
    /// "0.0.0.0:50051"`, `drain-delay = "5s"`); a flag or an environment variable overrides it.
    #[arg(long = "config", env = "OMS_GATEWAY_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (TOML, each setting's source, secrets left out) and
    /// exit.
    #[arg(long = "print-config")]
    pub print_config: bool,
    /// Apply every start-up rule (required settings, listener and caller identity, TLS and
    /// policy files, ports) without binding a port or calling OMS; print each problem and exit 1,
    /// or print the effective configuration (as --print-config) and exit 0.
    #[arg(long = "check-config", conflicts_with = "print_config")]
    pub check_config: bool,
}

/// Flags that are not settings: never keys of the file, never printed by `--print-config`.
const NOT_SETTINGS: &[&str] = &["config", "print-config", "check-config", "help", "version"];

/// The parsed command line, and what `--print-config` prints.
#[derive(Debug)]
pub struct LoadedCli {
    /// The settings.
    pub cli: Cli,
    /// Every setting's effective value and source.
    pub effective: EffectiveConfig,
}

/// Why the command line or the configuration file was refused.
#[derive(Debug)]
pub enum LoadError {
    /// clap's own answer (including `--help` and `--version`, which are not failures).
    Clap {
        /// clap's error.
        error: clap::Error,
        /// Which settings came from the file, when one was read (so a conflict can be traced).
        note: Option<String>,
    },
    /// The configuration file cannot be read or does not fit the flags.
    File(String),
}

// === impl LoadError ===

impl LoadError {
    /// Prints the error and exits: clap's exit codes (0 for `--help`, 2 for usage errors), and
    /// 2 for a bad configuration file.
    pub fn exit(self) -> ! {
        match self {
            Self::Clap { error, note } => {
                if let Some(note) = note.filter(|_| error.use_stderr()) {
                    let _ = error.print();
                    eprintln!("{note}");
                    std::process::exit(error.exit_code());
                }
                error.exit()
            }
            Self::File(message) => {
                eprintln!("oms-gateway: {message}");
                std::process::exit(2)
            }
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Clap { error, note: None } => write!(f, "{error}"),
            Self::Clap {
                error,
                note: Some(note),
            } => write!(f, "{error}{note}"),
            Self::File(message) => f.write_str(message),
        }
    }
}

// === impl Cli ===

impl Cli {
    /// Parses the process's arguments, environment and configuration file; prints the error
    /// and exits when they are refused (as `clap::Parser::parse` does).
    pub fn load() -> LoadedCli {
        Self::try_load_from(std::env::args_os()).unwrap_or_else(|err| err.exit())
    }

    /// Parses `args` (the first is the program name), the environment and the configuration
    /// file `--config` or `OMS_GATEWAY_CONFIG` names.
    pub fn try_load_from<I, T>(args: I) -> Result<LoadedCli, LoadError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let mut command = unset_when_empty(super::help::present(Self::command()));
        command.build();
        let file = match config_path(&args) {
            Some(path) => Some(ConfigFile::read(&path, &command)?),
            None => None,
        };
        let injected: BTreeMap<String, Vec<OsString>> = file
            .as_ref()
            .map(|file| file.not_overridden(&args, &command))
            .unwrap_or_default();
        let mut full = Vec::with_capacity(args.len() + injected.len());
        full.extend(args.first().cloned());
        full.extend(injected.values().flatten().cloned());
        full.extend(args.iter().skip(1).cloned());
        let sources = Sources::of(&command, &injected, file.as_ref());
        let clap_error = |error: clap::Error| LoadError::Clap {
            note: sources.note(&error),
            error,
        };
        let matches = command.try_get_matches_from_mut(full).map_err(clap_error)?;
        let cli = Self::from_arg_matches(&matches).map_err(clap_error)?;
        let from_file: BTreeSet<String> = injected.into_keys().collect();
        let path = file.map(|file| file.path);
        let effective = EffectiveConfig::new(&command, &matches, &from_file, path);
        Ok(LoadedCli { cli, effective })
    }
}

/// `command` with the environment variable of each flag set to the empty string ignored, as if
/// unset (`OMS_GATEWAY_LISTEN=` in a shell or a manifest means "not set", not "set to nothing"),
/// so the configuration file or the default applies.
fn unset_when_empty(command: clap::Command) -> clap::Command {
    let empty = |arg: &Arg| {
        arg.get_env()
            .and_then(std::env::var_os)
            .is_some_and(|value| value.is_empty())
    };
    let unset = move |arg: Arg| if empty(&arg) { arg.env(None) } else { arg };
    command
        .mut_args(unset)
        .mut_subcommand("sandbox", |sandbox| sandbox.mut_args(unset))
}

/// Where the values of the settings came from, to say it under a refused value: clap's message
/// names the flag, not the environment variable or the configuration file that set it.
struct Sources {
    /// `--long` → its environment variable, for the flags whose variable is set.
    env: BTreeMap<String, String>,
    /// The keys the configuration file gave, and its path.
    file: Option<(BTreeSet<String>, PathBuf)>,
    /// The note of a failure with no one flag to blame (a conflict, a missing flag).
    listing: Option<String>,
}

// === impl Sources ===

impl Sources {
    fn of(
        command: &clap::Command,
        injected: &BTreeMap<String, Vec<OsString>>,
        file: Option<&ConfigFile>,
    ) -> Self {
        let env = settings(command)
            .filter_map(|(long, arg)| {
                let name = arg.get_env()?;
                std::env::var_os(name)?;
                Some((long.to_owned(), name.to_string_lossy().into_owned()))
            })
            .collect();
        Self {
            env,
            file: file.map(|f| (injected.keys().cloned().collect(), f.path.clone())),
            listing: file.map(ConfigFile::note),
        }
    }

    /// The note under `error`: where the value of each flag clap names came from (the refused
    /// one; both of a conflict), else which settings the configuration file gave.
    fn note(&self, error: &clap::Error) -> Option<String> {
        use clap::error::{ContextKind, ContextValue};
        let mut shown = Vec::new();
        for kind in [ContextKind::InvalidArg, ContextKind::PriorArg] {
            match error.get(kind) {
                Some(ContextValue::String(arg)) => shown.push(arg.clone()),
                Some(ContextValue::Strings(args)) => shown.extend(args.iter().cloned()),
                _ => {}
            }
        }
        let sources: Vec<String> = shown
            .iter()
            .filter_map(|arg| arg.split_whitespace().next()?.strip_prefix("--"))
            .filter_map(|long| self.source(long))
            .collect();
        if sources.is_empty() {
            return if shown.is_empty() {
                self.listing.clone()
            } else {
                None
            };
        }
        Some(format!("({})", sources.join("; ")))
    }

    /// Where `--long`'s value came from, unless the command line.
    fn source(&self, long: &str) -> Option<String> {
        if let Some((keys, path)) = &self.file
            && keys.contains(long)
        {
            return Some(format!(
                "--{long} comes from the config file {}, key `{long}`",
                path.display()
            ));
        }
        let name = self.env.get(long)?;
        Some(format!(
            "--{long} comes from the environment variable {name}"
        ))
    }
}

/// The file `--config PATH` / `--config=PATH` names (before a `--`), else `OMS_GATEWAY_CONFIG`.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut tokens = args.iter().skip(1).map(|a| a.to_string_lossy());
    while let Some(token) = tokens.next() {
        if token == "--" {
            break;
        }
        if token == "--config" {
            return tokens.next().map(|path| PathBuf::from(path.as_ref()));
        }
        if let Some(path) = token.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("OMS_GATEWAY_CONFIG")
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
}

/// Whether the flag `--long` is on the command line (before a `--`).
fn on_command_line(args: &[OsString], long: &str) -> bool {
    let flag = format!("--{long}");
    let with_value = format!("--{long}=");
    args.iter()
        .skip(1)
        .map(|a| a.to_string_lossy())
        .take_while(|token| token != "--")
        .any(|token| token == flag || token.starts_with(&with_value))
}

/// A setting is a secret when `--help` hides its env value (but for a URL, see [`is_url`]) or
/// its name ends in `secret`, `token` or `password` (so `oms-api-secret`, not
/// `oms-api-secret-file` or `sandbox-token-ttl`).
fn is_secret(arg: &Arg) -> bool {
    let long = arg.get_long().unwrap_or_default();
    (arg.is_hide_env_values_set() && !is_url(arg))
        || ["secret", "token", "password"]
            .iter()
            .any(|word| long.ends_with(word))
}

/// A URL setting (`ValueHint::Url`): it may carry a password, so it is shown only through
/// `redact::url`.
fn is_url(arg: &Arg) -> bool {
    arg.get_value_hint() == clap::ValueHint::Url
}

/// The settings of the file: every arg with a long name but the [`NOT_SETTINGS`].
fn settings(command: &clap::Command) -> impl Iterator<Item = (&str, &Arg)> {
    command.get_arguments().filter_map(|arg| {
        let long = arg.get_long()?;
        (!NOT_SETTINGS.contains(&long)).then_some((long, arg))
    })
}

/// A flag that takes no value (`--insecure-allow-unauthenticated`): a boolean in the file.
fn is_switch(arg: &Arg) -> bool {
    !arg.get_action().takes_values()
}

/// A read, checked configuration file: for each key, the command-line tokens it stands for.
struct ConfigFile {
    path: PathBuf,
    values: BTreeMap<String, Vec<OsString>>,
}

// === impl ConfigFile ===

impl ConfigFile {
    /// Reads and checks `path` against the flags of `command`.
    fn read(path: &Path, command: &clap::Command) -> Result<Self, LoadError> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| LoadError::File(format!("cannot read the config file {shown}: {e}")))?;
        let fail = |message: String| LoadError::File(format!("config file {shown}: {message}"));
        let table: toml::Table = toml::from_str(&text).map_err(|e| fail(e.to_string()))?;
        let lines = key_lines(&text);
        let mut values = BTreeMap::new();
        for (key, value) in &table {
            let line = lines.get(key).copied().unwrap_or(1);
            let at = |message: String| fail(format!("line {line}: `{key}`: {message}"));
            let Some((long, arg)) = settings(command).find(|(long, _)| long == key) else {
                let valid: Vec<&str> = settings(command).map(|(long, _)| long).collect();
                return Err(at(format!(
                    "unknown key; the keys are the long flag names: {}",
                    valid.join(", ")
                )));
            };
            let tokens = tokens(long, arg, value).map_err(at)?;
            if is_secret(arg) {
                eprintln!(
                    "oms-gateway: warning: config file {shown} holds the secret `{key}`; prefer \
                     `{key}-file` (a Secret mount) or the environment"
                );
            }
            values.insert(key.clone(), tokens);
        }
        Ok(Self {
            path: path.to_owned(),
            values,
        })
    }

    /// The tokens of the keys whose flag is neither on the command line nor in the environment.
    fn not_overridden(
        &self,
        args: &[OsString],
        command: &clap::Command,
    ) -> BTreeMap<String, Vec<OsString>> {
        settings(command)
            .filter(|(long, _)| self.values.contains_key(*long))
            .filter(|(long, arg)| {
                let in_env = arg
                    .get_env()
                    .and_then(std::env::var_os)
                    .is_some_and(|value| !value.is_empty());
                !on_command_line(args, long) && !in_env
            })
            .map(|(long, _)| (long.to_owned(), self.values[long].clone()))
            .collect()
    }

    /// Appended to a clap error: which settings the file gave.
    fn note(&self) -> String {
        let keys: Vec<&str> = self.values.keys().map(String::as_str).collect();
        format!(
            "(settings from the config file {}: {})",
            self.path.display(),
            keys.join(", ")
        )
    }
}

/// The 1-based line of each top-level key of a TOML text that parsed.
fn key_lines(text: &str) -> BTreeMap<String, usize> {
    let Ok(table) = toml::de::DeTable::parse(text) else {
        return BTreeMap::new();
    };
    table
        .get_ref()
        .iter()
        .map(|(key, _)| {
            let line = text[..key.span().start].matches('\n').count() + 1;
            (key.get_ref().to_string(), line)
        })
        .collect()
}

/// The command-line tokens standing for `key = value`, its type and value checked against the
/// flag `arg`.
fn tokens(long: &str, arg: &Arg, value: &toml::Value) -> Result<Vec<OsString>, String> {
    if is_switch(arg) {
        return match (value, arg.get_action()) {
            (toml::Value::Boolean(true), ArgAction::SetTrue)
            | (toml::Value::Boolean(false), ArgAction::SetFalse) => {
                Ok(vec![format!("--{long}").into()])
            }
            (toml::Value::Boolean(_), _) => Ok(Vec::new()),
            (other, _) => Err(format!(
                "expected a boolean (`{long} = true`), found {}",
                other.type_str()
            )),
        };
    }
    let many = matches!(arg.get_action(), ArgAction::Append);
    let items: Vec<&toml::Value> = match value {
        toml::Value::Array(items) if many => items.iter().collect(),
        toml::Value::Array(_) => return Err("takes one value, found an array".to_owned()),
        single => vec![single],
    };
    let takes_bool = arg
        .get_possible_values()
        .iter()
        .any(|possible| possible.get_name() == "true");
    let mut tokens = Vec::with_capacity(items.len());
    for item in items {
        let text = match item {
            toml::Value::String(text) => text.clone(),
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Float(x) => x.to_string(),
            toml::Value::Boolean(b) if takes_bool => b.to_string(),
            other => {
                return Err(format!(
                    "expected a string or a number (the value of `--{long}`), found {}",
                    other.type_str()
                ));
            }
        };
        check_value(long, arg, &text)?;
        tokens.push(format!("--{long}={text}").into());
    }
    Ok(tokens)
}

/// Runs the flag's own value parser on `text`, alone (no env, no other flags).
fn check_value(long: &str, arg: &Arg, text: &str) -> Result<(), String> {
    let probe = clap::Command::new("oms-gateway")
        .color(clap::ColorChoice::Never)
        .arg(
            Arg::new("value")
                .long("value")
                .value_name("VALUE")
                .action(ArgAction::Set)
                .value_parser(arg.get_value_parser().clone()),
        );
    let token = OsString::from(format!("--value={text}"));
    match probe.try_get_matches_from([OsString::from("oms-gateway"), token]) {
        Ok(_) => Ok(()),
        Err(err) => {
            // clap's message without its usage lines, naming the real flag.
            let rendered = err.to_string();
            let message: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .take_while(|line| !line.starts_with("For more information"))
                .filter(|line| !line.is_empty())
                .collect();
            Err(message
                .join(" ")
                .trim_start_matches("error: ")
                .replace("'--value <VALUE>'", &format!("--{long}")))
        }
    }
}

/// Every setting's effective value and source, printed as TOML by `--print-config`.
#[derive(Debug)]
pub struct EffectiveConfig {
    file: Option<PathBuf>,
    settings: Vec<Effective>,
}

/// One setting in `--print-config`.
#[derive(Debug, Clone)]
struct Effective {
    key: String,
    /// The raw values (empty: unset).
    values: Vec<String>,
    switch: bool,
    secret: bool,
    /// A URL that may carry a password (see `redact`).
    url: bool,
    source: &'static str,
}

// === impl EffectiveConfig ===

impl EffectiveConfig {
    fn new(
        command: &clap::Command,
        matches: &ArgMatches,
        from_file: &BTreeSet<String>,
        file: Option<PathBuf>,
    ) -> Self {
        let settings = settings(command)
            .map(|(long, arg)| {
                let id = arg.get_id().as_str();
                let values: Vec<String> = matches
                    .get_raw(id)
                    .map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect())
                    .unwrap_or_default();
                let source = match matches.value_source(id) {
                    Some(ValueSource::EnvVariable) => "env",
                    Some(ValueSource::CommandLine | ValueSource::DefaultValue)
                        if from_file.contains(long) =>
                    {
                        "file"
                    }
                    Some(ValueSource::CommandLine) => "flag",
                    _ => "default",
                };
                Effective {
                    key: long.to_owned(),
                    values,
                    switch: is_switch(arg),
                    secret: is_secret(arg),
                    url: is_url(arg),
                    source,
                }
            })
            .collect();
        Self { file, settings }
    }
}

impl fmt::Display for EffectiveConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "# oms-gateway --print-config: the effective configuration, each setting's source\n\
             # (flag > env > file > default) after it. Feed it back with --config; secrets are\n\
             # printed only as comments."
        )?;
        if let Some(path) = &self.file {
            writeln!(f, "# config file: {}", path.display())?;
        }
        for setting in &self.settings {
            let mut line = String::new();
            if setting.values.is_empty() {
                let _ = write!(line, "# {} is unset", setting.key);
            } else if setting.secret {
                let _ = write!(line, "# {} = \"[redacted]\"", setting.key);
            } else if setting.url
                && setting
                    .values
                    .iter()
                    .any(|v| redact::url_has_credentials(v))
            {
                // Fed back, a masked password would be a wrong one: a comment, like a secret.
                let masked: Vec<String> = setting.values.iter().map(|v| redact::url(v)).collect();
                let shown = Effective {
                    values: masked,
                    ..setting.clone()
                };
                let _ = write!(line, "# {} = {}", setting.key, toml_value(&shown));
            } else {
                let _ = write!(line, "{} = {}", setting.key, toml_value(setting));
            }
            writeln!(f, "{line:<60} # {}", setting.source)?;
        }
        Ok(())
    }
}

/// A setting's value as TOML: a boolean for a switch, a number when the text is a plain
/// number, else a string; an array when the flag took several values.
fn toml_value(setting: &Effective) -> String {
    let one = |text: &str| {
        let boolean = setting.switch && (text == "true" || text == "false");
        if boolean || is_plain_number(text) {
            text.to_owned()
        } else {
            toml_string(text)
        }
    };
    match setting.values.as_slice() {
        [single] => one(single),
        many => format!(
            "[{}]",
            many.iter().map(|v| one(v)).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// `0`, `25`, `0.2`: digits (no leading zero, at most 15 of them), optionally a fraction.
fn is_plain_number(text: &str) -> bool {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole)
        && digits(fraction)
        && whole.len() <= 15
        && (whole == "0" || !whole.starts_with('0'))
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_numbers_print_bare_and_everything_else_quoted() {
        assert!(is_plain_number("1024"));
        assert!(is_plain_number("0.2"));
        assert!(is_plain_number("0"));
        assert!(!is_plain_number("007"));
        assert!(!is_plain_number("5s"));
        assert!(!is_plain_number("1e3"));
        assert!(!is_plain_number(""));
        assert_eq!(toml_string("a\"b\\c\u{1}"), r#""a\"b\\c\u0001""#);
    }

    #[test]
    fn the_config_flag_is_found_before_a_double_dash_only() {
        let args = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            config_path(&args(&["x", "--config", "a.toml"])),
            Some(PathBuf::from("a.toml"))
        );
        assert_eq!(
            config_path(&args(&["x", "--listen=1", "--config=b.toml"])),
            Some(PathBuf::from("b.toml"))
        );
        assert!(on_command_line(&args(&["x", "--listen=1"]), "listen"));
        assert!(!on_command_line(&args(&["x", "--listener"]), "listen"));
        assert!(!on_command_line(&args(&["x", "--", "--listen"]), "listen"));
    }
}
