"""PipeWeave storage tokens in Python: open the `storageToken` of a dispatch
and write results to object storage directly, as docs/protocol.md
("Storage tokens") describes.

Needs `cryptography` (AES-256-GCM and HKDF are not in the standard library)
and, for S3 and S3-compatible backends, `boto3`:

    pip install cryptography boto3
"""

import base64, json, os, time

PREFIX = "pwst1"
KEY_LABEL = b"pipeweave storage token v1"


class TokenError(Exception):
    """The token cannot be used: not a token, another key, or expired."""


def open_token(token, secret_hex, now=None):
    """The grant a token carries: {backend, scope, runId, attempt, expiresAt}."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    if not token.startswith(PREFIX + "."):
        raise TokenError("not a PipeWeave storage token")
    body = token[len(PREFIX) + 1:]
    sealed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=KEY_LABEL).derive(bytes.fromhex(secret_hex))
    try:
        plain = AESGCM(key).decrypt(sealed[:12], sealed[12:], PREFIX.encode())
    except InvalidTag:
        raise TokenError("the token was altered or sealed with another PIPEWEAVE_SECRET_KEY")
    grant = json.loads(plain)
    if (now if now is not None else time.time()) >= grant["expiresAt"]:
        raise TokenError("the token expired at %d" % grant["expiresAt"])
    return grant


def may_write(grant, path):
    """Whether the grant's scope lets its holder write `path`."""
    if ".." in path.split("/") or path.startswith("/"):
        return False
    return any(path.startswith(p) if p.endswith("/") else path == p
               for p in grant["scope"]["write"])


def path_style(backend):
    """Path-style requests, as the orchestrator decides: always for `minio`,
    and for `aws-s3` with a custom endpoint unless `pathStyle` is false."""
    if backend["provider"] == "minio":
        return True
    return backend.get("pathStyle", bool(backend.get("endpoint")))


def put(grant, path, data):
    """Writes `data` (bytes) at `path` in the grant's backend."""
    if not may_write(grant, path):
        raise TokenError("this token may not write %r" % path)
    backend, credentials = grant["backend"], grant["backend"].get("credentials", {})
    if backend["provider"] == "local":
        target = os.path.join(credentials["basePath"], backend["bucket"], *path.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target + ".part", "wb") as file:
            file.write(data)
        os.replace(target + ".part", target)
        return
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=backend.get("endpoint"),
        region_name=backend.get("region") or "us-east-1",
        aws_access_key_id=credentials.get("accessKeyId"),
        aws_secret_access_key=credentials.get("secretAccessKey"),
        aws_session_token=credentials.get("sessionToken"),
        config=Config(s3={"addressing_style": "path" if path_style(backend) else "virtual"}),
    )
    client.put_object(Bucket=backend["bucket"], Key=path, Body=data)
