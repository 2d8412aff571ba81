"""The model-call ledger: every model call made, charged to the person who set it going, and what
MODEL_CALLS_PER_USER_PER_DAY counts. A lower layer than runs/ and patients/, so that a run's stages, a patient
version and ingestion's vision reader are counted in one table (ledger/calls.py: `call_made`, the one way in;
`calls_left` before asking). It names what a call was for (a run, a report) by lazy foreign keys only and
imports neither app."""
