//! Data-residency regions and the `string_enum!` helper for closed sets of lowercase names.
//!
//! Foundation: configuration and the tenancy kernel both name regions, so the type lives
//! below both. Pure data: no I/O, no HTTP.

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, salvo_oapi::ToSchema)]
        #[serde(rename_all = "lowercase")]
        $(#[$meta])*
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "unknown {} {s:?} (expected one of: {})",
                        stringify!($name).to_lowercase(),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

string_enum!(
    /// A data-residency region; a tenant's rows live only in its region's databases.
    #[salvo(schema(name = "neotenant.tenancy.model.Region"))]
    Region { Us => "us", Eu => "eu" }
);
pub(crate) use string_enum;
