"""Pure policy: no I/O, no backend imports. Every decision about what happens next lives here."""
