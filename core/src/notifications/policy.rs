//! Which channels a recipient gets for a category and when, as pure rules: preferences merged
//! recipient > tenant default > platform default (critical categories bypass them), quiet
//! hours in the recipient's time zone (a window may wrap midnight), digest due times (a
//! duration, or the next `HH:MM` in the recipient's zone). No I/O here.

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::{Category, Channel, DigestRule};

/// Where a channel's on/off came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The category is critical.
    Critical,
    /// The recipient's choice for this category.
    Recipient,
    /// The recipient's account-wide default (email, in-app).
    RecipientDefault,
    /// The tenant's default channels (settings `notifications.default_channels`).
    Tenant,
    /// The category's channel set.
    Platform,
}

/// What is known about one recipient's choices.
#[derive(Debug, Clone, Default)]
pub struct Choices {
    /// Per channel, for the category in question.
    pub per_category: HashMap<Channel, bool>,
    /// Account-wide defaults (`preferences.notifications`), when the user set them.
    pub defaults: HashMap<Channel, bool>,
}

/// Each channel of `category` (narrowed to `only`, when given) with whether it is on for the
/// recipient and why.
pub fn channels(
    category: &Category,
    only: Option<&[Channel]>,
    choices: &Choices,
    tenant_default: Option<&[Channel]>,
) -> Vec<(Channel, bool, Source)> {
    category
        .channels
        .iter()
        .filter(|c| only.is_none_or(|o| o.contains(c)))
        .map(|&c| {
            if category.critical {
                (c, true, Source::Critical)
            } else if let Some(&on) = choices.per_category.get(&c) {
                (c, on, Source::Recipient)
            } else if let Some(&on) = choices.defaults.get(&c) {
                (c, on, Source::RecipientDefault)
            } else if let Some(t) = tenant_default {
                (c, t.contains(&c), Source::Tenant)
            } else {
                (c, true, Source::Platform)
            }
        })
        .collect()
}

/// A daily quiet window in local time ("HH:MM"); `start > end` wraps midnight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, salvo::oapi::ToSchema)]
#[serde(deny_unknown_fields)]
#[salvo(schema(name = "neotenant.notifications.QuietHours"))]
pub struct QuietHours {
    pub start: String,
    pub end: String,
}

/// "HH:MM" as a time of day.
pub fn parse_hhmm(s: &str) -> Option<NaiveTime> {
    if s.len() != 5 {
        return None;
    }
    NaiveTime::parse_from_str(s, "%H:%M").ok()
}

/// The instant of the next local `at` in `tz` strictly after `now` (DST gaps move it on).
fn next_local(now: DateTime<Utc>, tz: Tz, at: NaiveTime) -> DateTime<Utc> {
    let local = now.with_timezone(&tz).date_naive();
    for days in 0..3 {
        let day = local + Duration::days(days);
        let mut naive = day.and_time(at);
        // A time inside a DST gap does not exist: the first minute after it does.
        for _ in 0..180 {
            if let Some(t) = tz.from_local_datetime(&naive).earliest() {
                let t = t.with_timezone(&Utc);
                if t > now {
                    return t;
                }
                break;
            }
            naive += Duration::minutes(1);
        }
    }
    now + Duration::days(1)
}

/// When quiet hours end, if `now` is inside them for a recipient in `tz`.
pub fn quiet_until(now: DateTime<Utc>, tz: Tz, window: &QuietHours) -> Option<DateTime<Utc>> {
    let (start, end) = (parse_hhmm(&window.start)?, parse_hhmm(&window.end)?);
    if start == end {
        return None;
    }
    let t = now.with_timezone(&tz).time();
    let inside = if start < end {
        start <= t && t < end
    } else {
        t >= start || t < end
    };
    inside.then(|| next_local(now, tz, end))
}

/// When a digest opened at `now` for a recipient in `tz` is sent.
pub fn digest_due(now: DateTime<Utc>, tz: Tz, rule: &DigestRule) -> DateTime<Utc> {
    if let Some(at) = rule.at.as_deref().and_then(parse_hhmm) {
        return next_local(now, tz, at);
    }
    let window = i64::from(rule.window_secs.unwrap_or(3_600).max(1));
    if rule.fixed {
        let next = (now.timestamp().div_euclid(window) + 1) * window;
        return DateTime::from_timestamp(next, 0).unwrap_or(now + Duration::seconds(window));
    }
    now + Duration::seconds(window)
}

/// A recipient's zone, UTC when unknown.
pub fn zone(name: &str) -> Tz {
    name.parse().unwrap_or(Tz::UTC)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::QuietBehaviour;
    use super::*;

    fn category(critical: bool) -> Category {
        Category {
            key: "mention".into(),
            name: "Mention".into(),
            description: String::new(),
            channels: vec![Channel::Email, Channel::InApp, Channel::Sms],
            critical,
            quiet_hours: QuietBehaviour::Hold,
            variables: BTreeMap::new(),
            digest: None,
            throttle: None,
            platform: false,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn recipient_beats_tenant_beats_platform() {
        let mut choices = Choices::default();
        choices.per_category.insert(Channel::Email, false);
        choices.defaults.insert(Channel::InApp, true);
        let got = channels(&category(false), None, &choices, Some(&[Channel::Email]));
        assert_eq!(
            got,
            vec![
                (Channel::Email, false, Source::Recipient),
                (Channel::InApp, true, Source::RecipientDefault),
                (Channel::Sms, false, Source::Tenant),
            ]
        );
        let got = channels(
            &category(false),
            Some(&[Channel::Sms]),
            &Choices::default(),
            None,
        );
        assert_eq!(got, vec![(Channel::Sms, true, Source::Platform)]);
    }

    #[test]
    fn critical_categories_ignore_every_choice() {
        let mut choices = Choices::default();
        choices.per_category.insert(Channel::Email, false);
        let got = channels(&category(true), None, &choices, Some(&[]));
        assert!(got.iter().all(|(_, on, s)| *on && *s == Source::Critical));
    }

    #[test]
    fn quiet_hours_wrap_midnight_in_the_recipients_zone() {
        let w = QuietHours {
            start: "22:00".into(),
            end: "07:00".into(),
        };
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 23:30 in Berlin (winter, UTC+1) is quiet until 07:00 Berlin = 06:00 UTC.
        assert_eq!(
            quiet_until(at("2026-01-10T22:30:00Z"), berlin, &w),
            Some(at("2026-01-11T06:00:00Z"))
        );
        // 06:59 Berlin is still quiet; 07:00 is not.
        assert_eq!(
            quiet_until(at("2026-01-11T05:59:00Z"), berlin, &w),
            Some(at("2026-01-11T06:00:00Z"))
        );
        assert_eq!(quiet_until(at("2026-01-11T06:00:00Z"), berlin, &w), None);
        assert_eq!(quiet_until(at("2026-01-11T12:00:00Z"), berlin, &w), None);
        let day = QuietHours {
            start: "12:00".into(),
            end: "13:00".into(),
        };
        assert_eq!(
            quiet_until(at("2026-01-11T12:30:00Z"), Tz::UTC, &day),
            Some(at("2026-01-11T13:00:00Z"))
        );
    }

    #[test]
    fn digests_are_due_after_the_window_or_at_the_next_local_time() {
        let rule = DigestRule {
            window_secs: Some(600),
            at: None,
            max_items: 10,
            send_first: false,
            fixed: false,
        };
        assert_eq!(
            digest_due(at("2026-03-01T10:03:00Z"), Tz::UTC, &rule),
            at("2026-03-01T10:13:00Z")
        );
        // Fixed windows end on the boundaries, whoever the recipient.
        let fixed = DigestRule {
            fixed: true,
            ..rule.clone()
        };
        assert_eq!(
            digest_due(at("2026-03-01T10:03:00Z"), Tz::UTC, &fixed),
            at("2026-03-01T10:10:00Z")
        );
        assert_eq!(
            digest_due(at("2026-03-01T10:10:00Z"), Tz::UTC, &fixed),
            at("2026-03-01T10:20:00Z")
        );
        let daily = DigestRule {
            window_secs: None,
            at: Some("09:30".into()),
            ..rule
        };
        let ny: Tz = "America/New_York".parse().unwrap();
        // 10:00 New York has passed 09:30: the next is tomorrow 09:30 EST = 14:30 UTC.
        assert_eq!(
            digest_due(at("2026-01-10T15:00:00Z"), ny, &daily),
            at("2026-01-11T14:30:00Z")
        );
        // 08:00 New York: today 09:30.
        assert_eq!(
            digest_due(at("2026-01-10T13:00:00Z"), ny, &daily),
            at("2026-01-10T14:30:00Z")
        );
    }

    #[test]
    fn a_time_in_a_dst_gap_moves_to_the_first_real_minute() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let rule = DigestRule {
            window_secs: None,
            at: Some("02:30".into()),
            max_items: 10,
            send_first: false,
            fixed: false,
        };
        // 2026-03-29 02:00–03:00 does not exist in Berlin: 03:00 CEST = 01:00 UTC.
        assert_eq!(
            digest_due(at("2026-03-28T23:00:00Z"), berlin, &rule),
            at("2026-03-29T01:00:00Z")
        );
    }

    #[test]
    fn times_are_hh_mm() {
        assert!(parse_hhmm("09:30").is_some());
        for bad in ["9:30", "24:00", "09:60", "0930", "09:30:00"] {
            assert!(parse_hhmm(bad).is_none(), "{bad}");
        }
    }
}
