"""Verify an authkeeper webhook delivery (see docs/reauth.md, "Webhook notices")."""
import hashlib
import hmac
import time


def verify(secret: bytes, signature: str, delivery: str, body: bytes, tolerance: int = 300) -> bool:
    """True when the delivery is authentic (X-Authkeeper-Signature) and at most `tolerance` s old."""
    fields = dict(part.split("=", 1) for part in signature.split(",") if "=" in part)
    t = fields.get("t", "")
    if not t.isdigit() or abs(time.time() - int(t)) > tolerance:
        return False
    expected = hmac.new(secret, f"{t}.{delivery}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields.get("v1", ""))


if __name__ == "__main__":  # for the tests: headers in the environment, the body on stdin
    import os
    import sys

    ok = verify(os.environb[b"AK_SECRET"], os.environ["AK_SIGNATURE"], os.environ["AK_DELIVERY"], sys.stdin.buffer.read())
    sys.exit(0 if ok else 1)
