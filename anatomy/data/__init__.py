"""Preference data sources: `synthetic` (planted concepts), `local` (a user's file), `hh_rlhf`, `genies`.

Each is a config dataclass whose `load()` returns a validated, split `PreferenceData`."""
