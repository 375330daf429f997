//! The page's words in Finnish and English: the language a reader asked for (the switch's
//! cookie, else `Accept-Language`), and each phrase and state name in it.

use axum::http::{HeaderMap, header};

/// The language switch's cookie.
pub const LANG_COOKIE: &str = "siirto_lang";

/// A language of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English.
    En,
    /// Finnish.
    Fi,
}

impl Lang {
    /// The code (`en`, `fi`).
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Fi => "fi",
        }
    }

    /// A language by its code.
    pub fn parse(code: &str) -> Option<Lang> {
        match code.trim().to_ascii_lowercase().as_str() {
            "en" => Some(Lang::En),
            "fi" => Some(Lang::Fi),
            _ => None,
        }
    }

    /// The reader's language: the switch's cookie, else the first of `Accept-Language` we
    /// speak (by weight), else English.
    pub fn of(headers: &HeaderMap) -> Lang {
        if let Some(lang) = super::auth::cookie(headers, LANG_COOKIE).and_then(|c| Lang::parse(&c)) {
            return lang;
        }
        let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or("");
        accept_language(accept).unwrap_or(Lang::En)
    }

    /// A phrase of the page (its key when there is none, so a missing one shows, not breaks).
    pub fn t(self, key: &str) -> String {
        PHRASES
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, en, fi)| if self == Lang::Fi { *fi } else { *en })
            .unwrap_or(key)
            .to_owned()
    }
}

/// The first language of an `Accept-Language` value we speak, by weight.
pub fn accept_language(value: &str) -> Option<Lang> {
    let mut best: Option<(f32, Lang)> = None;
    for item in value.split(',') {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or("").trim();
        let weight = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let primary = tag.split('-').next().unwrap_or("");
        if let Some(lang) = Lang::parse(primary)
            && weight > 0.0
            && best.is_none_or(|(w, _)| weight > w)
        {
            best = Some((weight, lang));
        }
    }
    best.map(|(_, lang)| lang)
}

/// Every phrase's key.
pub fn keys() -> impl Iterator<Item = &'static str> {
    PHRASES.iter().map(|(key, _, _)| *key)
}

/// (key, English, Finnish).
const PHRASES: &[(&str, &str, &str)] = &[
    ("title", "siirto — server moves", "siirto — palvelinsiirrot"),
    ("search", "Search", "Hae"),
    (
        "search_hint",
        "Domain, user, customer, e-mail or contract",
        "Verkkotunnus, käyttäjä, asiakas, sähköposti tai sopimus",
    ),
    ("no_results", "Nothing found for", "Ei tuloksia haulle"),
    ("results", "Results for", "Tulokset haulle"),
    ("migrations", "Migrations", "Siirrot"),
    ("migration", "Migration", "Siirto"),
    ("source", "From", "Mistä"),
    ("target", "To", "Minne"),
    ("state", "State", "Tila"),
    ("cutover", "Cutover", "Siirtohetki"),
    ("progress", "Progress", "Eteneminen"),
    ("accounts", "Accounts", "Tilit"),
    ("account", "Account", "Tili"),
    ("domains", "Domains", "Verkkotunnukset"),
    ("domain", "Domain", "Verkkotunnus"),
    ("customer", "Customer", "Asiakas"),
    ("contract", "Contract", "Sopimus"),
    ("email", "E-mail", "Sähköposti"),
    ("reseller", "Reseller", "Jälleenmyyjä"),
    ("language", "Language", "Kieli"),
    ("transferred", "Copied", "Kopioitu"),
    ("verified", "Checked on the new server", "Tarkistettu uudella palvelimella"),
    ("arrived", "Moved", "Siirretty"),
    ("repointed", "DNS pointed to the new server", "DNS osoittaa uuteen palvelimeen"),
    ("notices_sent", "Notices sent", "Ilmoituksia lähetetty"),
    ("held", "Waiting for an operator", "Odottaa ylläpitäjää"),
    ("held_none", "No account waits for an operator.", "Yksikään tili ei odota ylläpitäjää."),
    ("reason", "Why", "Syy"),
    ("clears_it", "What clears it", "Mikä sen ratkaisee"),
    ("schedule", "Schedule", "Aikataulu"),
    ("tasks", "Tasks for a person", "Ihmisen tehtävät"),
    ("tasks_none", "No open task.", "Ei avoimia tehtäviä."),
    ("done_q", "Done?", "Tehty?"),
    ("note", "Note", "Huomio"),
    ("ack", "Mark done", "Merkitse tehdyksi"),
    ("manual", "done by a person", "ihmisen tekemä"),
    ("next_decommission", "Next decommission stage", "Seuraava käytöstäpoiston vaihe"),
    ("latest_events", "Latest events", "Viimeisimmät tapahtumat"),
    ("by_state", "By state", "Tiloittain"),
    ("what_next", "What happens next", "Mitä seuraavaksi"),
    ("customer_must", "What the customer must still do", "Mitä asiakkaan on vielä tehtävä"),
    (
        "old_account_open",
        "Its old account is kept open on the old server by the stage",
        "Vanha tili pidetään auki vanhalla palvelimella vaiheessa",
    ),
    ("old_account_why", "because, at the last check", "koska viimeisimmässä tarkistuksessa"),
    ("customer_must_none", "Nothing: siirto does everything.", "Ei mitään: siirto hoitaa kaiken."),
    ("record_change", "At their DNS provider, change", "Asiakkaan DNS-palvelussa muutettava"),
    ("to", "to", "arvoon"),
    ("notices", "Notices", "Ilmoitukset"),
    ("notices_none", "No notice yet.", "Ei ilmoituksia vielä."),
    ("sent_at", "Sent", "Lähetetty"),
    ("timeline", "Timeline", "Aikajana"),
    ("when", "When", "Milloin"),
    ("what", "What", "Mitä"),
    ("who", "Who", "Kuka"),
    ("actions", "Operator actions", "Ylläpitäjän toiminnot"),
    ("pause", "Pause", "Keskeytä"),
    ("resume", "Resume", "Jatka"),
    ("abort", "Abort", "Peru siirto"),
    ("retry", "Retry", "Yritä uudelleen"),
    ("rollback", "Roll back", "Palauta vanhalle palvelimelle"),
    ("assign_ip", "Assign IP", "Anna IP-osoite"),
    ("reason_field", "Reason", "Syy"),
    ("login", "Log in", "Kirjaudu"),
    ("logout", "Log out", "Kirjaudu ulos"),
    ("token", "Access token", "Pääsyavain"),
    ("login_hint", "Paste the access token you were given.", "Liitä saamasi pääsyavain."),
    ("login_failed", "That token is not valid.", "Avain ei kelpaa."),
    ("signed_in_as", "Signed in as", "Kirjautunut:"),
    ("live", "Updates live", "Päivittyy itsestään"),
    ("back", "Back", "Takaisin"),
    ("none", "none", "ei mitään"),
    ("open", "Open", "Avaa"),
    ("state.migration.planned", "planned, waiting for approval", "suunniteltu, odottaa hyväksyntää"),
    ("state.migration.approved", "approved, not started", "hyväksytty, ei aloitettu"),
    (
        "state.migration.started",
        "started: customers told, TTLs being lowered",
        "aloitettu: asiakkaille kerrottu, TTL-arvoja lasketaan",
    ),
    (
        "state.migration.ttl_lowered",
        "TTLs lowered, waiting for the cutover",
        "TTL-arvot laskettu, odottaa siirtohetkeä",
    ),
    ("state.migration.transferring", "moving accounts", "tilejä siirretään"),
    ("state.migration.cut_over", "all accounts moved, settling", "kaikki tilit siirretty, viimeistellään"),
    ("state.migration.settled", "finished", "valmis"),
    ("state.migration.paused", "paused by an operator", "ylläpitäjä on keskeyttänyt"),
    ("state.migration.aborted", "aborted", "peruttu"),
    (
        "state.account.awaiting_target_ip",
        "waiting for a dedicated IP on the new server",
        "odottaa omaa IP-osoitetta uudelta palvelimelta",
    ),
    ("state.account.pending", "not moved yet", "ei vielä siirretty"),
    ("state.account.queued", "waiting to be copied", "odottaa kopiointia"),
    ("state.account.copied", "being copied", "kopioidaan"),
    ("state.account.restored", "copied, being checked", "kopioitu, tarkistetaan"),
    (
        "state.account.verified",
        "checked on the new server, DNS next",
        "tarkistettu uudella palvelimella, seuraavaksi DNS",
    ),
    (
        "state.account.switched",
        "on the new server, mail being finished",
        "uudella palvelimella, sähköpostia viimeistellään",
    ),
    (
        "state.account.notified",
        "on the new server, customer told",
        "uudella palvelimella, asiakkaalle kerrottu",
    ),
    (
        "state.account.syncing_mail",
        "on the new server, last mail being copied",
        "uudella palvelimella, viimeisiä viestejä kopioidaan",
    ),
    (
        "state.account.checking_mail",
        "on the new server, old mail log being checked",
        "uudella palvelimella, vanhan palvelimen postilokia tarkistetaan",
    ),
    ("state.account.done", "moved", "siirretty"),
    ("state.account.failed", "failed, waiting for an operator", "epäonnistui, odottaa ylläpitäjää"),
    ("state.account.held", "held, waiting for an operator", "pysäytetty, odottaa ylläpitäjää"),
    ("state.account.rolled_back", "rolled back to the old server", "palautettu vanhalle palvelimelle"),
    ("state.domain.pending", "not repointed yet", "ei vielä ohjattu"),
    ("state.domain.ttl_observed", "TTL read", "TTL luettu"),
    ("state.domain.ttl_lowered", "TTL lowered", "TTL laskettu"),
    ("state.domain.verified_on_target", "ready on the new server", "valmis uudella palvelimella"),
    ("state.domain.repointed", "pointed to the new server", "ohjattu uudelle palvelimelle"),
    ("state.domain.serving_target", "served by the new server", "uusi palvelin vastaa"),
    (
        "state.domain.ttl_restored",
        "served by the new server, TTL restored",
        "uusi palvelin vastaa, TTL palautettu",
    ),
    ("state.domain.rolled_back", "pointed back to the old server", "ohjattu takaisin vanhalle palvelimelle"),
    ("state.domain.external", "DNS elsewhere: the customer repoints it", "DNS muualla: asiakas ohjaa itse"),
    (
        "state.domain.awaiting_customer",
        "waiting for the customer to change their DNS",
        "odottaa, että asiakas muuttaa DNS-tietonsa",
    ),
    (
        "state.domain.propagated",
        "the customer's DNS points to the new server",
        "asiakkaan DNS osoittaa uuteen palvelimeen",
    ),
    ("state.domain.not_repointed", "not repointed by siirto", "siirto ei ohjaa"),
    ("state.notice.queued", "waiting to be sent", "odottaa lähetystä"),
    ("state.notice.sending", "being sent", "lähetetään"),
    ("state.notice.failing", "not delivered yet, retried", "ei vielä perillä, yritetään uudelleen"),
    ("state.notice.failed", "refused by the mail server", "postipalvelin hylkäsi"),
    ("state.notice.sent", "sent", "lähetetty"),
    ("state.notice.bounced", "sent, but bounced", "lähetetty, mutta palautui"),
    ("state.notice.skipped_late", "not sent: too late", "ei lähetetty: liian myöhään"),
    ("decommission", "Retiring the old server", "Vanhan palvelimen käytöstäpoisto"),
    (
        "decommission_none",
        "No stages yet: they are recorded when the migration is cut over.",
        "Ei vaiheita vielä: ne kirjataan, kun kaikki tilit on siirretty.",
    ),
    ("stage", "Stage", "Vaihe"),
    ("due", "Date", "Ajankohta"),
    ("changes", "Changed by", "Muuttanut"),
    ("stage_done", "done", "tehty"),
    ("stage_held", "kept open", "jätetty auki"),
    ("stage_to_do", "still to do", "vielä tekemättä"),
    ("postponed_by", "Postponed by", "Siirtänyt myöhemmäksi:"),
    ("skipped_by", "Skipped by", "Ohittanut:"),
    ("undone_by", "Undone by", "Perunut:"),
    ("was_due", "was due", "oli"),
    ("until_utc", "New date (UTC)", "Uusi ajankohta (UTC)"),
    ("postpone", "Postpone", "Siirrä myöhemmäksi"),
    ("skip", "Skip", "Ohita"),
    ("undo", "Undo", "Peru"),
    ("check_now", "Check public DNS now", "Tarkista julkinen DNS nyt"),
    (
        "checked_now_note",
        "Public DNS was asked just now; this view does not update itself.",
        "Julkiselta DNS:ltä kysyttiin juuri nyt; tämä näkymä ei päivity itsestään.",
    ),
    ("back_to_live", "Back to the live view", "Takaisin itsestään päivittyvään näkymään"),
    ("kept_open", "Old accounts kept open, and why", "Auki jätetyt vanhat tilit ja miksi"),
    (
        "kept_open_hint",
        "Public DNS still sends visitors or mail for these names to the old server (or did not answer), \
         so the account stays open there until it no longer does. It is checked again by itself.",
        "Julkinen DNS ohjaa näiden nimien kävijät tai postin yhä vanhalle palvelimelle (tai ei vastannut), \
         joten tili pysyy siellä auki, kunnes ei enää ohjaa. Tilanne tarkistetaan uudelleen itsestään.",
    ),
    ("kept_open_none", "No old account is kept open.", "Yhtään vanhaa tiliä ei ole jätetty auki."),
    ("resolver", "Resolver", "Nimipalvelin"),
    ("name", "Name", "Nimi"),
    ("rtype", "Type", "Tyyppi"),
    ("answer", "Answer", "Vastaus"),
    ("checked_now", "checked just now", "tarkistettu juuri nyt"),
    ("recorded_evidence", "as the stage last saw it", "kuten vaihe viimeksi näki"),
    ("confirmations", "Confirmations", "Vahvistukset"),
    ("needs", "needs", "vaatii"),
    ("people", "different people", "eri henkilöä"),
    ("confirmed_by", "confirmed by", "vahvistanut:"),
    ("one_person", "one person", "yksi henkilö"),
    ("confirm", "Confirm", "Vahvista"),
    (
        "stage_action.suspend_accounts",
        "suspend the moved accounts on the old server",
        "siirrettyjen tilien sulkeminen vanhalla palvelimella",
    ),
    (
        "stage_action.remove_accounts",
        "remove the moved accounts from the old server",
        "siirrettyjen tilien poistaminen vanhalta palvelimelta",
    ),
    (
        "stage_action.cancel_licence",
        "cancel the old server's cPanel licence",
        "vanhan palvelimen cPanel-lisenssin irtisanominen",
    ),
    ("stage_action.power_off", "power the old server off", "vanhan palvelimen sammuttaminen"),
    (
        "stage_action.destroy_disks",
        "unrack the server and destroy its disks",
        "palvelimen purku ja levyjen tuhoaminen",
    ),
    ("decommission.state.pending", "waiting for its date", "odottaa ajankohtaansa"),
    ("decommission.state.running", "running", "käynnissä"),
    (
        "decommission.state.ran",
        "ran; the accounts kept open are checked again",
        "ajettu; auki jätetyt tilit tarkistetaan uudelleen",
    ),
    (
        "decommission.state.waiting",
        "waiting for people to confirm its tasks",
        "odottaa tehtävien vahvistamista",
    ),
    (
        "decommission.state.blocked",
        "held back by its checks, looked at again by itself:",
        "sen tarkistukset estävät, tarkistetaan uudelleen itsestään:",
    ),
    ("decommission.state.done", "done", "tehty"),
    ("decommission.state.skipped", "skipped", "ohitettu"),
    ("decommission.state.undone", "undone", "peruttu"),
    ("next.waits_for_cutover", "Moves at the cutover", "Siirtyy siirtohetkellä"),
    ("next.waits_for_transfer", "Waits for its turn to be copied", "Odottaa vuoroaan kopiointiin"),
    ("next.copying", "Being copied to the new server", "Kopioidaan uudelle palvelimelle"),
    ("next.verifying", "Being checked on the new server", "Tarkistetaan uudella palvelimella"),
    ("next.waits_for_gate", "DNS points to the new server at", "DNS ohjataan uudelle palvelimelle"),
    ("next.repointing", "DNS is being pointed to the new server", "DNS:ää ohjataan uudelle palvelimelle"),
    (
        "next.final_mail_sync",
        "On the new server; the last mail is being copied",
        "Uudella palvelimella; viimeiset viestit kopioidaan",
    ),
    (
        "next.waits_for_customer",
        "Moved; waits for the customer to change their DNS",
        "Siirretty; odottaa asiakkaan DNS-muutosta",
    ),
    ("next.done", "Moved", "Siirretty"),
    ("next.held", "Held for an operator", "Pysäytetty, odottaa ylläpitäjää"),
    ("next.waits_for_ip", "Waits for a dedicated IP", "Odottaa omaa IP-osoitetta"),
    ("next.rolled_back", "Rolled back to the old server", "Palautettu vanhalle palvelimelle"),
    ("next.paused", "The migration is paused", "Siirto on keskeytetty"),
    ("next.aborted", "The migration was aborted", "Siirto peruttiin"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_heaviest_language_we_speak() {
        assert_eq!(accept_language("fi-FI,fi;q=0.9,en;q=0.8"), Some(Lang::Fi));
        assert_eq!(accept_language("sv-SE, en;q=0.5, fi;q=0.7"), Some(Lang::Fi));
        assert_eq!(accept_language("en-GB,en;q=0.9"), Some(Lang::En));
        assert_eq!(accept_language("de, sv"), None);
        assert_eq!(accept_language("fi;q=0"), None);
    }

    #[test]
    fn every_phrase_has_both_languages_and_a_unique_key() {
        let mut keys = std::collections::BTreeSet::new();
        for (key, en, fi) in PHRASES {
            assert!(keys.insert(*key), "{key} twice");
            assert!(!en.is_empty() && !fi.is_empty(), "{key}");
        }
        assert_eq!(Lang::Fi.t("search"), "Hae");
        assert_eq!(Lang::En.t("no.such.key"), "no.such.key");
    }
}
