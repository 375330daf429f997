//! Customer notices: rendering templates and sending them through a channel (SMTP, directory).

use minijinja::{Environment, UndefinedBehavior};

/// Renders one notice template with strict undefined variables, so a template that names a
/// variable the context lacks is an error, not an empty string in a customer's mail.
pub fn render(template: &str, context: &serde_json::Value) -> Result<String, minijinja::Error> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.add_template("notice", template)?;
    env.get_template("notice")?.render(context)
}
