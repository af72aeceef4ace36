//! `api_strings!`: an enum whose variants the operator writes into the API as fixed strings
//! (status phases, condition types and reasons, Event reasons). The status fields stay strings
//! in the CRDs, so a status written by another operator version still parses; the enums only
//! make sure this version writes a closed set of values, each spelt in one place.

/// Declares the enum with `as_str` (the wire string), `Display` (the same) and `ALL` (every
/// variant, for the tests that pin the strings).
macro_rules! api_strings {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident => $wire:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The string written to the API.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
