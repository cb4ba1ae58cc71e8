import ssl
from pathlib import Path

import certifi
from typer.testing import CliRunner

from tokenlens.cli import app

runner = CliRunner()


def test_ca_creates_the_certificate_and_a_combined_bundle(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ca", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    ca_cert = tmp_path / "mitmproxy-ca-cert.pem"
    bundle = tmp_path / "ca-bundle.pem"
    assert str(ca_cert) in result.output
    assert f"export SSL_CERT_FILE={bundle}" in result.output
    assert f"export REQUESTS_CA_BUNDLE={bundle}" in result.output
    assert f"export NODE_EXTRA_CA_CERTS={ca_cert}" in result.output
    assert "export HTTPS_PROXY=http://localhost:8420" in result.output
    content = bundle.read_text()
    assert content.startswith(Path(certifi.where()).read_text().rstrip("\n")) and content.endswith(
        ca_cert.read_text()
    )
    context = ssl.create_default_context(cafile=str(bundle))  # loads: a valid bundle
    assert context.cert_store_stats()["x509_ca"] > 10
    again = runner.invoke(app, ["ca", "--data-dir", str(tmp_path)])
    assert again.output == result.output  # the CA is kept, not recreated
