"""names.txt: fetched from its URL or taken from the offline cache, its hash checked, read as
one name a line."""

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import DataError

CACHE_ENV = "ACTGRAD_DATA_CACHE"


def default_cache_dir():
    """$ACTGRAD_DATA_CACHE, else the user's cache dir."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "actgrad"


def sha256_of(data):
    return hashlib.sha256(data).hexdigest()


def fetch_names(url, sha256, cache_dir, timeout=30):
    """Return the bytes of names.txt: from cache_dir/names.txt if it is there, else from url.

    A cached file must have the expected hash. A good download is stored in the cache
    (atomically) so the next call needs no network.
    """
    cached = Path(cache_dir) / "names.txt"
    if cached.is_file():
        data = cached.read_bytes()
        if sha256_of(data) != sha256:
            raise DataError(
                f"{cached} has sha256 {sha256_of(data)}, but data.sha256 in params.yaml is "
                f"{sha256}; replace it with the right names.txt, or delete it to download {url}"
            )
        return data
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(
            f"cannot download {url} ({reason}); check data.url in params.yaml, or work offline by "
            f"putting names.txt in ${CACHE_ENV} (now {cache_dir})"
        ) from None
    actual = sha256_of(data)
    if actual != sha256:
        raise DataError(
            f"sha256 mismatch for {url}: expected {sha256}, got {actual} "
            "(truncated or corrupted download, or data.sha256 in params.yaml is wrong)"
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".names.txt.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, cached)
    return data


def read_words(text, source="names.txt"):
    """One name a line; blank lines skipped. Errors name `source` and the first bad line."""
    words = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        word = line.strip()
        if not word:
            continue
        bad = [c for c in word if not "a" <= c <= "z"]
        if bad:
            raise DataError(
                f"{source} line {lineno}: {word!r} has {bad[0]!r}; names may hold only a-z"
            )
        words.append(word)
    if not words:
        raise DataError(f"{source} holds no names (empty file or only blank lines)")
    return words
