//! `check --online`: read-only API calls that tell an operator the setup
//! will work. For each (project, team, slug) of the watches it asks
//! `GET /v9/projects/{idOrName}?teamId=&slug=` with the token, and says per
//! watch what is wrong and how to fix it: a bad token, a team the token
//! cannot reach, a project that is not under the team. Exit 1 on any
//! problem; a missing token is a configuration error (exit 2).

use std::io::Write;

use crate::config::{Config, Watch};
use crate::exit::Exit;
use crate::redact::for_stdout;
use crate::setup::AppError;
use crate::vercel::{ProjectLookup, PurgeTarget, VercelClient};

/// Runs the checks and prints one line per watch (and per problem) on stdout.
pub async fn check_online(config: &Config) -> Result<Exit, AppError> {
    let token = config.vercel().token_from_env()?;
    let client = VercelClient::trusting(config.vercel(), token, config.trust())
        .map_err(AppError::client("API"))?;
    let mut lines = Vec::new();
    let mut problems = 0;
    // One call per target, however many watches share it.
    let mut asked: Vec<(PurgeTarget, ProjectLookup)> = Vec::new();
    for w in config.watches() {
        let target = PurgeTarget {
            project: w.project.clone(),
            team_id: w.team_id.clone(),
            slug: w.slug.clone(),
        };
        let lookup = match asked.iter().find(|(t, _)| *t == target) {
            Some((_, l)) => l.clone(),
            None => {
                let l = client.project(&target).await;
                asked.push((target, l.clone()));
                l
            }
        };
        match verdict(config, w, &lookup) {
            Ok(line) => lines.push(line),
            Err(problem) => {
                problems += 1;
                lines.push(problem);
            }
        }
    }
    let mut out = std::io::stdout().lock();
    for l in &lines {
        writeln!(out, "{l}").map_err(AppError::Stdout)?;
    }
    if problems == 0 {
        writeln!(
            out,
            "online: ok: the token works and every project was found under its team"
        )
    } else {
        writeln!(
            out,
            "online: {problems} {} found; fix {} before the first purge",
            if problems == 1 { "problem" } else { "problems" },
            if problems == 1 { "it" } else { "them" }
        )
    }
    .map_err(AppError::Stdout)?;
    out.flush().map_err(AppError::Stdout)?;
    Ok(if problems == 0 {
        Exit::Ok
    } else {
        Exit::PurgeFailed
    })
}

/// The team a watch calls for, in words.
fn team_words(w: &Watch) -> String {
    match (&w.team_id, &w.slug) {
        (Some(t), Some(s)) => format!("team {} (slug {})", for_stdout(t), for_stdout(s)),
        (Some(t), None) => format!("team {}", for_stdout(t)),
        (None, Some(s)) => format!("team slug {}", for_stdout(s)),
        (None, None) => "the token's personal account (no team_id or slug)".to_owned(),
    }
}

/// The line for one watch: `Ok` when its project was found, else the
/// problem and its fix.
fn verdict(config: &Config, w: &Watch, lookup: &ProjectLookup) -> Result<String, String> {
    let name = for_stdout(&w.name);
    let project = for_stdout(&w.project);
    let team = team_words(w);
    let var = for_stdout(config.vercel().token_env());
    match lookup {
        ProjectLookup::Found { id, name: found } => Ok(format!(
            "online: watch {name}: project {project} found ({} {id}) under {team}",
            if found.is_empty() { "id" } else { found }
        )),
        ProjectLookup::Refused {
            invalid_token: true,
            status,
            message,
        } => Err(format!(
            "online: watch {name}: problem: the token in {var} was refused ({status}: {message}); \
             fix: create a token at https://vercel.com/account/tokens with its scope set to the team that owns project {project}, and put it in {var}"
        )),
        ProjectLookup::Refused {
            status: 403,
            message,
            ..
        } => Err(format!(
            "online: watch {name}: problem: the token in {var} cannot reach {team} (403: {message}); \
             fix: check vercel.team_id/slug (or the watch's team_id/slug) against the team's Settings page, and that the token's scope includes that team"
        )),
        ProjectLookup::Refused {
            status: 404,
            message,
            ..
        } => Err(format!(
            "online: watch {name}: problem: no project {project} under {team} (404: {message}); \
             fix: set the watch's project to the project's name or id (Project Settings > General > Project ID){}",
            if w.team_id.is_none() && w.slug.is_none() {
                ", and if a team owns it, set vercel.team_id (Team Settings > General > Team ID)"
            } else {
                ", and check that this team owns it"
            }
        )),
        ProjectLookup::Refused {
            status, message, ..
        } => Err(format!(
            "online: watch {name}: problem: vercel answered {status} looking up project {project} under {team}: {message}"
        )),
        ProjectLookup::NoAnswer(why) => Err(format!(
            "online: watch {name}: problem: no answer from {} ({}); fix: check the network, a proxy (HTTPS_PROXY) or its CA (ca_file:)",
            for_stdout(config.vercel().api_base().as_str().trim_end_matches('/')),
            for_stdout(why)
        )),
    }
}
