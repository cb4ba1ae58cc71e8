"""The gateway's own credentials for the platforms, used in base-URL mode when the client sends none (Claude
Code's CLAUDE_CODE_SKIP_BEDROCK_AUTH / CLAUDE_CODE_SKIP_VERTEX_AUTH, an SDK without credentials):

- Bedrock: AWS SigV4 with botocore and the standard credential chain (environment, shared files, SSO,
  container and instance roles), signed last, after routing and redaction changed the request.
- Vertex AI: an OAuth access token from google-auth's default credentials.

Resolving credentials may do network I/O (instance metadata, token endpoints): `AwsSigner.credentials()` and
`VertexTokens.token()` are blocking and must run off the event loop (the addon runs them in a thread).
Signing itself is CPU only.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

SIGNED_HEADERS_DROPPED = ("authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256")
SIGNED_HEADERS = ("host", "content-type")
VERTEX_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)


class CredentialsMissing(RuntimeError):
    pass


class AwsSigner:
    """SigV4 for Bedrock (service `bedrock`) with botocore's credential chain, resolved once and refreshed
    by botocore when they expire."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._credentials: Any = None

    def credentials(self) -> Any:
        """Frozen credentials (blocking: may ask an instance or container endpoint)."""
        with self._lock:
            if self._credentials is None:
                import botocore.session

                found = botocore.session.Session().get_credentials()
                if found is None:
                    raise CredentialsMissing(
                        "no AWS credentials found (environment, ~/.aws, SSO or an instance role) to sign "
                        "Bedrock calls with"
                    )
                self._credentials = found
            return self._credentials.get_frozen_credentials()

    @staticmethod
    def sign(
        method: str, url: str, headers: Mapping[str, str], body: bytes, region: str, credentials: Any
    ) -> dict[str, str]:
        """The headers to set on the request (Authorization, X-Amz-Date, X-Amz-Security-Token): the
        signature covers host, path, query, body, content type and the request's other x-amz-* headers."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        # Only what SigV4 needs and the body's type are signed: later stages may still set other headers
        # (the response guardrails ask for an uncompressed answer) without breaking the signature.
        kept = {
            k: v
            for k, v in headers.items()
            if k.lower() in SIGNED_HEADERS
            or k.lower().startswith("x-amz-")
            and k.lower() not in SIGNED_HEADERS_DROPPED
        }
        request = AWSRequest(method=method, url=url, data=body, headers=kept)
        SigV4Auth(credentials, "bedrock", region).add_auth(request)
        out = {"authorization": request.headers["Authorization"], "x-amz-date": request.headers["X-Amz-Date"]}
        token = request.headers.get("X-Amz-Security-Token")
        if token:
            out["x-amz-security-token"] = token
        return out


class VertexTokens:
    """Access tokens from google-auth's default credentials, refreshed shortly before they expire."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._credentials: Any = None

    def token(self) -> str:
        """A valid access token (blocking: may call the token endpoint)."""
        with self._lock:
            if self._credentials is None:
                import google.auth

                try:
                    self._credentials, _ = google.auth.default(scopes=list(VERTEX_SCOPES))
                except google.auth.exceptions.DefaultCredentialsError as exc:
                    raise CredentialsMissing(f"no Google credentials to call Vertex AI with: {exc}") from None
            creds = self._credentials
            if not creds.valid:  # no token yet, or within google-auth's refresh margin of its expiry
                import google.auth.transport.requests

                creds.refresh(google.auth.transport.requests.Request())
            return str(creds.token)
