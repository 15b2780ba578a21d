//! Login recipes: the declarative `[sites.NAME.login] steps`, validated by [`Recipe::parse`] and
//! run in a real headless Chromium by [`run_recipe`] (feature `browser`).
//!
//! Each step is a table with exactly one action:
//!
//! | action | what it does |
//! | --- | --- |
//! | `goto = URL` | navigates (URL relative to the site's origin) and waits for the load; an HTTP 403, 429 or 5xx main document fails with [`LoginError::Blocked`], another 4xx with [`LoginError::HttpStatus`] |
//! | `fill = SELECTOR, value = V` | waits for the element, focuses and clears it, types `V` (CDP `Input.insertText`) and fires `change` |
//! | `click = SELECTOR` | waits for the element and clicks its center with the mouse (a DOM `click()` when it has no box) |
//! | `wait_for = SELECTOR` | waits until an element matches |
//! | `wait_for_url = PATH or URL` | waits until the page's path (with the query when `PATH` has one, or the whole URL when absolute) is this and the document is parsed |
//! | `evaluate = JS` | evaluates the script (promises awaited); fails if it throws |
//!
//! A `fill` value is `account:username`, `account:password` (the account's secret reference,
//! resolved when the login runs), `env:NAME`, `file:PATH`, or a literal. Every step is bounded
//! by the login's `step_timeout` and the whole login by its `timeout`; errors name the step
//! (1-based), its action and selector or URL, never a filled value.
//!
//! After the steps the storage state is captured: every cookie of the browser context
//! (`Storage.getCookies`, HttpOnly ones included) and the localStorage of each of the login's
//! `origins` (default: the site's origin), navigating there when the page is elsewhere.

use std::fmt;

use authkeeper_core::secret_ref::SecretRef;

use crate::config::{AccountConfig, RecipeStep};
use crate::login::LoginError;

#[cfg(feature = "browser")]
pub use driver::{load_state_and_check, load_state_and_check_with, run_recipe};

/// A validated recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// Its steps, in order.
    pub steps: Vec<Action>,
}

/// One step of a validated recipe.
#[derive(Clone, PartialEq, Eq)]
pub enum Action {
    /// Navigate to the URL (relative to the site's origin).
    Goto(String),
    /// Type a value into the element matching the selector.
    Fill {
        /// The CSS selector.
        selector: String,
        /// Where the value comes from.
        value: FillValue,
    },
    /// Click the element matching the selector.
    Click(String),
    /// Wait until an element matches the selector.
    WaitFor(String),
    /// Wait until the page's path (or whole URL) is this.
    WaitForUrl(String),
    /// Evaluate the script.
    Evaluate(String),
}

impl Action {
    /// The action and its selector or URL, for messages (never a value, never a script).
    pub fn describe(&self) -> String {
        match self {
            Action::Goto(url) => format!("goto {url}"),
            Action::Fill { selector, value } => format!("fill {selector} with {}", value.kind()),
            Action::Click(selector) => format!("click {selector}"),
            Action::WaitFor(selector) => format!("wait_for {selector}"),
            Action::WaitForUrl(url) => format!("wait_for_url {url}"),
            Action::Evaluate(script) => format!("evaluate ({} chars of script)", script.len()),
        }
    }
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Where a `fill` value comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum FillValue {
    /// `account:username`: the account's `username`.
    AccountUsername,
    /// `account:password`: the account's `password` reference, resolved at login time.
    AccountPassword,
    /// `env:NAME` or `file:PATH`.
    Secret(SecretRef),
    /// Any other text, typed as is.
    Literal(String),
}

impl FillValue {
    /// Parses a step's `value`.
    pub fn parse(text: &str) -> Result<FillValue, String> {
        match text {
            "account:username" => Ok(FillValue::AccountUsername),
            "account:password" => Ok(FillValue::AccountPassword),
            other if other.starts_with("account:") => Err(
                "`value = \"account:...\"` must be account:username or account:password".to_owned(),
            ),
            other if other.starts_with("env:") || other.starts_with("file:") => {
                Ok(FillValue::Secret(SecretRef::parse(other)))
            }
            other => Ok(FillValue::Literal(other.to_owned())),
        }
    }

    /// What kind of value it is, for messages (`account:password`, `env:NAME`, `a literal`).
    pub fn kind(&self) -> String {
        match self {
            FillValue::AccountUsername => "account:username".to_owned(),
            FillValue::AccountPassword => "account:password".to_owned(),
            FillValue::Secret(reference) => format!("{reference:?}"),
            FillValue::Literal(_) => "a literal".to_owned(),
        }
    }

    /// The value for `account`. Step `step` is named in errors.
    fn resolve(
        &self,
        account: &AccountConfig,
        step: usize,
    ) -> Result<zeroize::Zeroizing<String>, LoginError> {
        use authkeeper_core::ExposeSecret as _;
        match self {
            FillValue::AccountUsername => account
                .username
                .clone()
                .map(zeroize::Zeroizing::new)
                .ok_or_else(|| {
                    LoginError::Config(format!(
                        "step {step} fills account:username, but account {} has no `username`",
                        account.name
                    ))
                }),
            FillValue::AccountPassword => {
                crate::login::resolve_password(account)?.ok_or_else(|| {
                    LoginError::Config(format!(
                        "step {step} fills account:password, but account {} has no `password`",
                        account.name
                    ))
                })
            }
            FillValue::Secret(reference) => reference
                .resolve()
                .map(|secret| zeroize::Zeroizing::new(secret.expose_secret().to_owned()))
                .map_err(|source| LoginError::Secret {
                    what: format!("the value of step {step}"),
                    source,
                }),
            FillValue::Literal(text) => Ok(zeroize::Zeroizing::new(text.clone())),
        }
    }
}

impl fmt::Debug for FillValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.kind())
    }
}

impl Recipe {
    /// Validates `steps`: each has exactly one action, `fill` has a `value` and only `fill`
    /// has one, no selector or URL is empty. Errors name the step (1-based).
    pub fn parse(steps: &[RecipeStep]) -> Result<Recipe, LoginError> {
        if steps.is_empty() {
            return Err(LoginError::Config(
                "the login recipe has no steps".to_owned(),
            ));
        }
        steps
            .iter()
            .enumerate()
            .map(|(index, step)| {
                parse_step(step).map_err(|reason| LoginError::InvalidRecipe {
                    step: index + 1,
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|steps| Recipe { steps })
    }

    /// Resolves every `fill` value for `account` (before any browser starts), in step order.
    pub fn resolve_values(
        &self,
        account: &AccountConfig,
    ) -> Result<Vec<Option<zeroize::Zeroizing<String>>>, LoginError> {
        self.steps
            .iter()
            .enumerate()
            .map(|(index, action)| match action {
                Action::Fill { value, .. } => value.resolve(account, index + 1).map(Some),
                _ => Ok(None),
            })
            .collect()
    }
}

fn parse_step(step: &RecipeStep) -> Result<Action, String> {
    let present: Vec<&str> = [
        ("goto", step.goto.is_some()),
        ("fill", step.fill.is_some()),
        ("click", step.click.is_some()),
        ("wait_for", step.wait_for.is_some()),
        ("wait_for_url", step.wait_for_url.is_some()),
        ("evaluate", step.evaluate.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    match present.as_slice() {
        [] => {
            return Err(if step.value.is_some() {
                "`value` without `fill`".to_owned()
            } else {
                "no action: a step needs one of goto, fill (with value), click, wait_for, \
                 wait_for_url, evaluate"
                    .to_owned()
            });
        }
        [_] => {}
        several => {
            return Err(format!(
                "more than one action ({}): a step does exactly one thing",
                several.join(", ")
            ));
        }
    }
    if step.value.is_some() && step.fill.is_none() {
        return Err("`value` goes only with `fill`".to_owned());
    }
    let non_empty = |name: &str, text: &Option<String>| -> Result<String, String> {
        match text.as_deref().map(str::trim) {
            Some("") | None => Err(format!("`{name}` is empty")),
            Some(text) => Ok(text.to_owned()),
        }
    };
    if step.goto.is_some() {
        return non_empty("goto", &step.goto).map(Action::Goto);
    }
    if step.fill.is_some() {
        let selector = non_empty("fill", &step.fill)?;
        let Some(value) = &step.value else {
            return Err(format!("`fill = \"{selector}\"` needs a `value`"));
        };
        return Ok(Action::Fill {
            selector,
            value: FillValue::parse(value)?,
        });
    }
    if step.click.is_some() {
        return non_empty("click", &step.click).map(Action::Click);
    }
    if step.wait_for.is_some() {
        return non_empty("wait_for", &step.wait_for).map(Action::WaitFor);
    }
    if step.wait_for_url.is_some() {
        return non_empty("wait_for_url", &step.wait_for_url).map(Action::WaitForUrl);
    }
    non_empty("evaluate", &step.evaluate).map(Action::Evaluate)
}

#[cfg(feature = "browser")]
mod driver;

#[cfg(test)]
mod tests {
    use super::*;

    fn step(toml_text: &str) -> RecipeStep {
        toml_like(toml_text)
    }

    /// Builds a step from `key=value;key=value` pairs.
    fn toml_like(text: &str) -> RecipeStep {
        let mut step = RecipeStep {
            goto: None,
            fill: None,
            value: None,
            click: None,
            wait_for: None,
            wait_for_url: None,
            evaluate: None,
        };
        for pair in text.split(';').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap();
            let value = Some(value.to_owned());
            match key {
                "goto" => step.goto = value,
                "fill" => step.fill = value,
                "value" => step.value = value,
                "click" => step.click = value,
                "wait_for" => step.wait_for = value,
                "wait_for_url" => step.wait_for_url = value,
                "evaluate" => step.evaluate = value,
                _ => panic!("{key}"),
            }
        }
        step
    }

    #[test]
    fn validates_steps_and_names_the_bad_one() {
        let good = Recipe::parse(&[
            step("goto=/login"),
            step("fill=#username;value=account:username"),
            step("fill=#password;value=env:PW"),
            step("click=button#submit"),
            step("wait_for_url=/home"),
        ])
        .unwrap();
        assert_eq!(good.steps.len(), 5);
        let error = Recipe::parse(&[step("goto=/login"), step("goto=/a;click=#b")]).unwrap_err();
        assert!(
            matches!(error, LoginError::InvalidRecipe { step: 2, .. }),
            "{error}"
        );
        let error = Recipe::parse(&[step("fill=#password")]).unwrap_err();
        assert!(
            matches!(error, LoginError::InvalidRecipe { step: 1, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("needs a `value`"), "{error}");
        let error = Recipe::parse(&[step("goto=/"), step("click=#a;value=x")]).unwrap_err();
        assert!(
            matches!(error, LoginError::InvalidRecipe { step: 2, .. }),
            "{error}"
        );
        let error = Recipe::parse(&[step("fill=#a;value=account:email")]).unwrap_err();
        assert!(
            matches!(error, LoginError::InvalidRecipe { step: 1, .. }),
            "{error}"
        );
        assert!(Recipe::parse(&[step("")]).is_err());
        assert!(Recipe::parse(&[]).is_err());
    }

    #[test]
    fn describe_never_shows_a_literal_value() {
        let recipe = Recipe::parse(&[step("fill=#password;value=hunter2")]).unwrap();
        assert_eq!(recipe.steps[0].describe(), "fill #password with a literal");
        assert!(!format!("{recipe:?}").contains("hunter2"));
    }
}
