"""Download one file at image build time and keep it only if its SHA-256 is the pinned one."""

import hashlib
import sys
import urllib.request
from pathlib import Path


def main(url: str, sha256: str, folder: str) -> None:
    target = Path(folder) / url.rsplit("/", 1)[-1]
    with urllib.request.urlopen(url, timeout=120) as response:
        body = response.read()
    digest = hashlib.sha256(body).hexdigest()
    if digest != sha256:
        sys.exit(f"{url}: SHA-256 {digest}, expected {sha256}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(body)


if __name__ == "__main__":
    main(*sys.argv[1:])
