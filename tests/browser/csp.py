"""Watching a browser context for Content-Security-Policy violations across all its pages and navigations."""

from __future__ import annotations

# Runs before any page script in every document of the context; reports each violation to Python.
_REPORT_VIOLATIONS = """
document.addEventListener('securitypolicyviolation', e => {
  window.__cspViolation(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'} on ${location.pathname}`
    + ` (${e.sourceFile}:${e.lineNumber})`);
});
"""


def watch_csp(context) -> list[str]:
    """Every violation any page of `context` reports from now on: the event, and the console line Chromium
    writes for it (so one the page itself swallowed still counts)."""
    seen: list[str] = []
    context.expose_function("__cspViolation", lambda text: seen.append(text))
    context.add_init_script(_REPORT_VIOLATIONS)
    context.on(
        "console", lambda msg: seen.append(msg.text) if "Content Security Policy" in msg.text else None
    )
    return seen
