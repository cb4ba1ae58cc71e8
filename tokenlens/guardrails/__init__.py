"""Content guardrails (issue 5): PII and secret detection, prompt-injection scoring, custom rules, redaction."""
