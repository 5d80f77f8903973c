"""Golden GCS V4 signed URLs from Google's own Python signer (google-cloud-storage), the
independent reference our Rust signer must match byte for byte. Offline: the key is
made here, the timestamp is fixed by the caller, nothing goes to the network.

  golden.py keygen EMAIL KEY_JSON   writes a new service-account JSON key (RSA 2048)
  golden.py sign KEY_JSON < cases   cases: JSON [{"endpoint","bucket","object","expires","timestamp"}]
                                    prints the signed URLs, one JSON list
"""

import json
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.cloud.storage import _signing
from google.cloud.storage.blob import _quote
from google.oauth2 import service_account


def keygen(email, path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    info = {
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": email,
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    with open(path, "w") as f:
        json.dump(info, f)


def sign(path):
    creds = service_account.Credentials.from_service_account_file(path)
    urls = []
    for case in json.load(sys.stdin):
        # What Blob.generate_signed_url(version="v4") builds, with a fixed clock.
        resource = "/{}/{}".format(case["bucket"], _quote(case["object"], safe=b"/~"))
        urls.append(
            _signing.generate_signed_url_v4(
                creds,
                resource=resource,
                expiration=case["expires"],
                api_access_endpoint=case["endpoint"],
                method="GET",
                _request_timestamp=case["timestamp"],
            )
        )
    json.dump(urls, sys.stdout)


if __name__ == "__main__":
    if sys.argv[1] == "keygen":
        keygen(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "sign":
        sign(sys.argv[2])
    else:
        sys.exit(__doc__)
