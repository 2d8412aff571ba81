"""Documents: files written whole, markdown made safe to show, markdown printed as PDF.

A plain package (no models, no requests) that knows nothing of patients or runs; the apps call it."""
