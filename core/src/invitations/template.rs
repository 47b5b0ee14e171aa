//! Invitation mail templates, as pure rules: which variables a template may use, checking a
//! template before it is saved (syntax and unknown variables, each a field error), the
//! platform's built-in template, and rendering a mail (minijinja; the HTML body is
//! HTML-escaped, the subject and text body are not).
//!
//! **Invariants:** only [`VARIABLES`] reach a template, all of them plain strings, so a tenant's
//! template cannot read anything else of the system; rendering is bounded (fuel, recursion
//! and output size), so a template cannot hang or flood a mail. No I/O here.

use minijinja::{AutoEscape, Environment, UndefinedBehavior};

use crate::error::FieldError;
use crate::mail::Mail;

/// The variables a template may use, with what they hold.
pub const VARIABLES: &[(&str, &str)] = &[
    ("tenant_name", "the tenant's display name"),
    (
        "inviter_name",
        "who sent the invitation (display name, username or email)",
    ),
    ("invitee_email", "the invited address"),
    (
        "accept_url",
        "the link that accepts the invitation (carries the token)",
    ),
    ("token", "the invitation token itself"),
    ("message", "the inviter's personal message (may be empty)"),
    ("expires_at", "when the invitation expires (RFC 3339)"),
    ("roles", "the roles the invitee will hold, comma-separated"),
];

/// The largest rendered part of a mail.
const MAX_OUTPUT: usize = 200_000;
/// Rendering steps one template may take (a loop over a huge range runs out).
const FUEL: u64 = 50_000;

pub const BUILTIN_SUBJECT: &str = "{{ inviter_name }} invited you to {{ tenant_name }}";
pub const BUILTIN_TEXT: &str = "Hello,\n\n\
{{ inviter_name }} invited you ({{ invitee_email }}) to join {{ tenant_name }}.\n\
{% if message %}\nTheir message:\n\n{{ message }}\n{% endif %}\n\
To accept, open this link before {{ expires_at }}:\n\n{{ accept_url }}\n\n\
If you did not expect this invitation, ignore this mail.\n";
pub const BUILTIN_HTML: &str = "<p>Hello,</p>\n\
<p>{{ inviter_name }} invited you ({{ invitee_email }}) to join <strong>{{ tenant_name }}</strong>.</p>\n\
{% if message %}<blockquote>{{ message }}</blockquote>\n{% endif %}\
<p><a href=\"{{ accept_url }}\">Accept the invitation</a> before {{ expires_at }}.</p>\n\
<p>If you did not expect this invitation, ignore this mail.</p>\n";

/// A template's three parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts<'a> {
    pub subject: &'a str,
    pub text: &'a str,
    pub html: Option<&'a str>,
}

impl Parts<'static> {
    pub fn builtin() -> Self {
        Parts {
            subject: BUILTIN_SUBJECT,
            text: BUILTIN_TEXT,
            html: Some(BUILTIN_HTML),
        }
    }
}

/// The values of one mail, by variable.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Values {
    pub tenant_name: String,
    pub inviter_name: String,
    pub invitee_email: String,
    pub accept_url: String,
    pub token: String,
    pub message: String,
    pub expires_at: String,
    pub roles: String,
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(50);
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env
}

const NAMES: [(&str, &str); 3] = [
    ("subject", "/subject"),
    ("text", "/text_body"),
    ("body.html", "/html_body"),
];

/// Every problem of `parts`: syntax errors and variables outside [`VARIABLES`], each at its
/// field's pointer; empty when the template can be saved.
pub fn check(parts: &Parts<'_>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let env = environment();
    let sources = [Some(parts.subject), Some(parts.text), parts.html];
    for ((name, pointer), source) in NAMES.iter().zip(sources) {
        let Some(source) = source else { continue };
        if source.contains('\0') {
            errors.push(FieldError {
                pointer: (*pointer).into(),
                message: "must not contain NUL".into(),
            });
            continue;
        }
        match env.template_from_named_str(name, source) {
            Err(e) => errors.push(FieldError {
                pointer: (*pointer).into(),
                message: format!("template syntax: {}", e.detail().unwrap_or("invalid")),
            }),
            Ok(t) => {
                let mut unknown: Vec<String> = t
                    .undeclared_variables(false)
                    .into_iter()
                    .filter(|v| !VARIABLES.iter().any(|(known, _)| known == v))
                    .collect();
                unknown.sort();
                for v in unknown {
                    errors.push(FieldError {
                        pointer: (*pointer).into(),
                        message: format!(
                            "unknown variable `{v}`; known: {}",
                            VARIABLES
                                .iter()
                                .map(|(k, _)| *k)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
            }
        }
    }
    if parts.subject.contains(['\r', '\n']) {
        errors.push(FieldError {
            pointer: "/subject".into(),
            message: "must be one line".into(),
        });
    }
    errors
}

/// A rendering that failed (a template saved before a rule changed, or one running out of
/// fuel): the caller falls back to the built-in template.
#[derive(Debug, thiserror::Error)]
#[error("the invitation template could not be rendered: {0}")]
pub struct RenderError(String);

/// The mail of `parts` for `values`, to `to`. Without an HTML part, the text is sent as
/// escaped preformatted HTML too.
pub fn render(parts: &Parts<'_>, values: &Values, to: &str) -> Result<Mail, RenderError> {
    let env = environment();
    let one = |name: &str, source: &str| -> Result<String, RenderError> {
        let t = env
            .template_from_named_str(name, source)
            .map_err(|e| RenderError(e.to_string()))?;
        let out = t.render(values).map_err(|e| RenderError(e.to_string()))?;
        if out.len() > MAX_OUTPUT {
            return Err(RenderError(format!(
                "{name} renders over {MAX_OUTPUT} bytes"
            )));
        }
        Ok(out)
    };
    let subject: String = one("subject", parts.subject)?
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = one("text", parts.text)?;
    let html = match parts.html {
        Some(source) => one("body.html", source)?,
        None => format!("<pre>{}</pre>", escape(&text)),
    };
    Ok(Mail {
        to: to.into(),
        subject: subject.trim().to_string(),
        text,
        html,
        message_id: None,
        unsubscribe: None,
    })
}

fn escape(s: &str) -> String {
    minijinja::HtmlEscape(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values {
        Values {
            tenant_name: "Acme & Co".into(),
            inviter_name: "Ada <admin>".into(),
            invitee_email: "bob@example.test".into(),
            accept_url: "https://app.test/acme/join#token=nti_x".into(),
            token: "nti_x".into(),
            message: "<script>alert(1)</script>".into(),
            expires_at: "2026-12-07T00:00:00Z".into(),
            roles: "member".into(),
        }
    }

    #[test]
    fn the_builtin_template_is_valid_and_renders() {
        assert_eq!(check(&Parts::builtin()), vec![]);
        let mail = render(&Parts::builtin(), &values(), "bob@example.test").unwrap();
        assert_eq!(mail.subject, "Ada <admin> invited you to Acme & Co");
        assert!(mail.text.contains("https://app.test/acme/join#token=nti_x"));
        assert!(
            mail.text.contains("<script>alert(1)</script>"),
            "text is not escaped"
        );
        // HTML is escaped: no markup from a variable survives.
        assert!(!mail.html.contains("<script>"), "{}", mail.html);
        assert!(mail.html.contains("&lt;script&gt;"), "{}", mail.html);
        assert!(mail.html.contains("Acme &amp; Co"), "{}", mail.html);
    }

    #[test]
    fn unknown_variables_and_bad_syntax_are_field_errors() {
        let errors = check(&Parts {
            subject: "Hi {{ secret_key }}",
            text: "{{ accept_url }} {% for x in %}",
            html: Some("{{ config.database }} {{ tenant_name }}"),
        });
        let pointers: Vec<&str> = errors.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            ["/subject", "/text_body", "/html_body"],
            "{errors:?}"
        );
        assert!(errors[0].message.contains("`secret_key`"));
        assert!(errors[1].message.starts_with("template syntax"));
        assert!(errors[2].message.contains("`config`"));
    }

    #[test]
    fn loops_and_set_variables_are_not_unknown() {
        let parts = Parts {
            subject: "Join {{ tenant_name|upper }}",
            text: "{% set who = inviter_name %}{{ who }} {% for n in [1, 2] %}{{ roles }}{{ n }}{% endfor %}",
            html: None,
        };
        assert_eq!(check(&parts), vec![]);
        let mail = render(&parts, &values(), "bob@example.test").unwrap();
        assert_eq!(mail.subject, "Join ACME & CO");
        assert!(
            mail.html.starts_with("<pre>Ada &lt;admin&gt;"),
            "{}",
            mail.html
        );
    }

    #[test]
    fn a_runaway_template_stops() {
        let parts = Parts {
            subject: "x",
            text: "{% for i in range(100000) %}{% for j in range(100000) %}.{% endfor %}{% endfor %}",
            html: None,
        };
        assert!(render(&parts, &values(), "bob@example.test").is_err());
    }

    #[test]
    fn a_subject_is_one_line() {
        let errors = check(&Parts {
            subject: "a\nBcc: x@y",
            text: "t",
            html: None,
        });
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].pointer, "/subject");
        // A value with a line break cannot break a subject either.
        let mut v = values();
        v.tenant_name = "Acme\r\nBcc: evil@x".into();
        let mail = render(&Parts::builtin(), &v, "bob@example.test").unwrap();
        assert!(!mail.subject.contains(['\r', '\n']));
    }
}
