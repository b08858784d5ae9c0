"""The certificates the TLS and WSS tests use, made fresh by the openssl command line in a temporary directory
(never committed): a test CA, a server certificate for 127.0.0.1 and localhost, a client certificate from
that CA whose CN is a user name, one from another CA the broker does not trust, and an expired one from the
test CA.
"""

import dataclasses
import os
import subprocess
import tempfile
import unittest

CLIENT_USER = "alice"
# RSA keeps the certificates readable by every client here (paho's ssl, mosquitto_pub, Chromium's NSS).
KEY_ARGS = ["-newkey", "rsa:2048", "-nodes"]


@dataclasses.dataclass(frozen=True)
class TestPki:
    ca_cert: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    other_ca_cert: str
    other_client_cert: str
    other_client_key: str
    expired_client_cert: str
    expired_client_key: str


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _write(path, text):
    with open(path, "w") as file:
        file.write(text)


def _make_ca(directory, name):
    _openssl("req", "-x509", *KEY_ARGS, "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=directory)


def _make_leaf(directory, ca, name, subject, extensions, start="", end=""):
    """A key and a certificate signed by `ca`. `start`/`end` (YYMMDDHHMMSSZ) set the validity window through
    `openssl ca`, the one openssl 3.0 command that takes explicit dates (needed for the expired certificate)."""
    _openssl("req", "-new", *KEY_ARGS, "-subj", subject, "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=directory)
    _write(os.path.join(directory, f"{name}.ext"), extensions)
    if not start:
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
                 "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=directory)
        return
    database = os.path.join(directory, f"{name}.index")
    _write(database, "")
    _write(os.path.join(directory, f"{name}.ca.cnf"), f"""[ca]
default_ca = test
[test]
database = {database}
new_certs_dir = {directory}
serial = {directory}/{name}.serial
default_md = sha256
policy = anything
unique_subject = no
[anything]
commonName = supplied
""")
    _write(os.path.join(directory, f"{name}.serial"), "1000\n")
    _openssl("ca", "-batch", "-config", f"{name}.ca.cnf", "-cert", f"{ca}.pem", "-keyfile", f"{ca}.key",
             "-in", f"{name}.csr", "-startdate", start, "-enddate", end, "-extfile", f"{name}.ext",
             "-notext", "-out", f"{name}.pem", cwd=directory)


SERVER_EXT = ("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
              "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")


def make_server_cert(directory, ca, name):
    """Another server certificate for 127.0.0.1, signed by `ca` (a CA `make_test_pki` made in `directory`):
    its certificate and key paths."""
    _make_leaf(directory, ca, name, "/CN=localhost", SERVER_EXT)
    return os.path.join(directory, f"{name}.pem"), os.path.join(directory, f"{name}.key")


def make_test_pki(directory):
    """Writes the whole set into `directory` and returns their paths."""
    server_ext = SERVER_EXT
    client_ext = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
    _make_ca(directory, "ca")
    _make_ca(directory, "other-ca")
    _make_leaf(directory, "ca", "server", "/CN=localhost", server_ext)
    _make_leaf(directory, "ca", "client", f"/CN={CLIENT_USER}", client_ext)
    _make_leaf(directory, "other-ca", "other-client", f"/CN={CLIENT_USER}", client_ext)
    _make_leaf(directory, "ca", "expired-client", f"/CN={CLIENT_USER}", client_ext,
               start="200101000000Z", end="200102000000Z")
    path = lambda name: os.path.join(directory, name)  # noqa: E731
    return TestPki(
        ca_cert=path("ca.pem"), server_cert=path("server.pem"), server_key=path("server.key"),
        client_cert=path("client.pem"), client_key=path("client.key"),
        other_ca_cert=path("other-ca.pem"), other_client_cert=path("other-client.pem"),
        other_client_key=path("other-client.key"),
        expired_client_cert=path("expired-client.pem"), expired_client_key=path("expired-client.key"),
    )


class PkiTestCase(unittest.TestCase):
    """A test class with a fresh test PKI (`cls.pki`, made in `cls.pki_dir`) for all its tests."""

    @classmethod
    def setUpClass(cls):
        cls.pki_dir = tempfile.TemporaryDirectory(prefix="shardmq-pki-")
        cls.pki = make_test_pki(cls.pki_dir.name)

    @classmethod
    def tearDownClass(cls):
        cls.pki_dir.cleanup()
