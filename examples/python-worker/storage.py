"""PipeWeave storage tokens in Python: open the `storageToken` of a dispatch,
read a stored input and write results to object storage directly, as
docs/protocol.md ("Storage tokens") describes.

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


def _covered(prefixes, path):
    if ".." in path.split("/") or path.startswith("/"):
        return False
    return any(path.startswith(p) if p.endswith("/") else path == p for p in prefixes)


def may_write(grant, path):
    """Whether the grant's scope lets its holder write `path`."""
    return _covered(grant["scope"]["write"], path)


def may_read(grant, path):
    """Whether the grant's scope lets its holder read `path` (a writer may
    read back what it may write)."""
    return _covered(grant["scope"]["read"] + grant["scope"]["write"], path)


def path_style(backend):
    """Path-style requests, as the orchestrator decides: always for `minio`,
    and for `aws-s3` with a custom endpoint unless `pathStyle` is false."""
    if backend["provider"] == "minio":
        return True
    return backend.get("pathStyle", bool(backend.get("endpoint")))


def _local_path(grant, path):
    backend, credentials = grant["backend"], grant["backend"].get("credentials", {})
    return os.path.join(credentials["basePath"], backend["bucket"], *path.split("/"))


def get(grant, path):
    """Reads the object at `path` in the grant's backend, as bytes."""
    if not may_read(grant, path):
        raise TokenError("this token may not read %r" % path)
    if grant["backend"]["provider"] == "local":
        with open(_local_path(grant, path), "rb") as file:
            return file.read()
    answer = _s3_client(grant["backend"]).get_object(Bucket=grant["backend"]["bucket"], Key=path)
    return answer["Body"].read()


def put(grant, path, data):
    """Writes `data` (bytes) at `path` in the grant's backend."""
    if not may_write(grant, path):
        raise TokenError("this token may not write %r" % path)
    backend = grant["backend"]
    if backend["provider"] == "local":
        target = _local_path(grant, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target + ".part", "wb") as file:
            file.write(data)
        os.replace(target + ".part", target)
        return
    _s3_client(backend).put_object(Bucket=backend["bucket"], Key=path, Body=data)


def _s3_client(backend):
    import boto3
    from botocore.config import Config

    credentials = backend.get("credentials", {})
    return boto3.client(
        "s3",
        endpoint_url=backend.get("endpoint"),
        region_name=backend.get("region") or "us-east-1",
        aws_access_key_id=credentials.get("accessKeyId"),
        aws_secret_access_key=credentials.get("secretAccessKey"),
        aws_session_token=credentials.get("sessionToken"),
        config=Config(s3={"addressing_style": "path" if path_style(backend) else "virtual"}),
    )
