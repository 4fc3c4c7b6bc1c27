"""One url to one local file, safe against cut, mixed and stalled downloads (docs/checkpoints.md).

* The byte count is checked against Content-Length / Content-Range: a connection closed early leaves a
  partial file that is kept for a resume and reported as "download incomplete: N of M bytes".
* A partial file is resumed only when the server proves it is the same file: the ETag (or Last-Modified)
  seen when it was started goes out as `If-Range`, and a server whose file changed answers with the whole
  new file instead. Without a validator the partial is resumed only when a sha256 will check the result
  (a resumed file that fails it is downloaded once more from the start). Callers key partial files by url.
* A server silent for `timeout_s` ends the download with the url and what to do, the partial file kept.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import NamedTuple

from tqdm.auto import tqdm

from .checkpoint_format import durable_rename
from .errors import CheckpointError

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0  # a server that sends nothing for this long is stalled


class _Response(NamedTuple):
    stream: object
    total_bytes: int | None  # size of the whole file, when the server says
    resumed: bool            # the stream continues the partial file
    validator: str | None    # strong ETag or Last-Modified (file://: size and mtime) of the served file


def download_file(url: str, dest: str, *, sha256: str | None = None, size: int | None = None,
                  timeout_s: float = TIMEOUT_S) -> str:
    """Stream `url` to `dest` (resuming `dest.part` when safe), verify size/sha256, rename into place."""
    part = dest + ".part"
    for attempt in range(2):
        resumed = _fetch(url, part, timeout_s, trust_sha256=sha256 is not None and attempt == 0)
        problem = _verify(part, sha256, size)
        if problem is None:
            break
        _discard(part)
        if not resumed or attempt == 1:
            raise CheckpointError(f"Download of {url} has {problem}; the file was deleted — check url/sha256/size "
                                  "and retry.")
        logger.warning("The resumed download of %s has %s; downloading it again from the start.", url, problem)
    durable_rename(part, dest)
    _discard(part + ".json")
    return dest


def _fetch(url: str, part: str, timeout_s: float, trust_sha256: bool) -> bool:
    """Append to (or restart) `part` until the server's file is complete; returns whether it resumed."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    saved = _saved_validator(part, url) if have else None
    offset = have if have and (saved or trust_sha256) else 0
    try:
        response = _open_checked(url, offset, saved, timeout_s)
    except OSError as e:
        raise CheckpointError(f"Cannot download {url} ({e}); check the url and network, or download it "
                              "yourself and pass the folder.") from e
    if not response.resumed:
        with open(part + ".json", "w", encoding="utf-8") as f:
            json.dump({"url": url, "validator": response.validator}, f)
    written = _stream_to(response, part, url, offset if response.resumed else 0, timeout_s)
    if response.total_bytes is not None and written != response.total_bytes:
        raise CheckpointError(f"Download of {url} incomplete: {written} of {response.total_bytes} bytes (the "
                              f"server closed the connection); the partial file {part} is kept — run again to "
                              "resume, or download it yourself and pass the folder.")
    return response.resumed


def _stream_to(response: _Response, part: str, url: str, start: int, timeout_s: float) -> int:
    """Write the body after `start` bytes already in `part`; returns the size of `part` afterwards."""
    written = start
    try:
        with response.stream, open(part, "ab" if response.resumed else "wb") as out, tqdm(
                total=response.total_bytes, initial=start, unit="B", unit_scale=True,
                desc=os.path.basename(urllib.parse.urlsplit(url).path) or url, disable=None) as bar:
            read = getattr(response.stream, "read1", response.stream.read)  # what has arrived, not a full chunk
            while chunk := read(_CHUNK_BYTES):
                out.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
    except TimeoutError as e:
        raise CheckpointError(f"Download of {url} stalled: no data for {timeout_s:g} s after {written} of "
                              f"{response.total_bytes or '?'} bytes; the partial file {part} is kept — run again "
                              "to resume, or download it yourself and pass the folder.") from e
    except (http.client.IncompleteRead, ConnectionError) as e:
        raise CheckpointError(f"Download of {url} incomplete: {written} of {response.total_bytes or '?'} bytes "
                              f"({type(e).__name__}); the partial file {part} is kept — run again to resume.") from e
    return written


def _open_checked(url: str, offset: int, validator: str | None, timeout_s: float) -> _Response:
    """Open at `offset`; a 416, or a 206 that does not start where we stopped, restarts from zero."""
    try:
        response = _open(url, offset, validator, timeout_s)
    except urllib.error.HTTPError as e:
        if e.code != 416 or not offset:
            raise
        return _open(url, 0, None, timeout_s)  # Range not satisfiable: the partial file is not a prefix
    if response.resumed is None:  # a Content-Range we cannot use
        response.stream.close()
        return _open(url, 0, None, timeout_s)
    return response


def _open(url: str, offset: int, validator: str | None, timeout_s: float) -> _Response:
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme in ("", "file"):
        return _open_file(urllib.request.url2pathname(urllib.parse.urlsplit(url).path) if scheme else url,
                          offset, validator)
    if scheme not in ("http", "https"):
        raise CheckpointError(f"Unsupported url scheme {scheme!r} in {url}; use http(s):// or file://.")
    headers = {}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator:
            headers["If-Range"] = validator  # the server sends the whole file if it changed since
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s)
    except urllib.error.URLError as e:  # urllib wraps a timeout while connecting or reading the headers
        if not isinstance(getattr(e, "reason", None), TimeoutError):
            raise
        raise CheckpointError(f"Download of {url} stalled: the server did not answer within {timeout_s:g} s; "
                              "check the url and network and retry, or download it yourself and pass the "
                              "folder.") from e
    etag = response.headers.get("ETag")
    found = etag if etag and not etag.startswith("W/") else response.headers.get("Last-Modified")
    if offset and response.status == 206:
        start, total = _content_range(response.headers.get("Content-Range"))
        resumed = True if start == offset else None
        return _Response(response, total, resumed, found)
    length = response.headers.get("Content-Length")
    return _Response(response, int(length) if length and length.isdigit() else None, False, found)


def _open_file(path: str, offset: int, validator: str | None) -> _Response:
    stat = os.stat(path)
    found = f"size={stat.st_size};mtime_ns={stat.st_mtime_ns}"
    resumed = bool(offset) and validator == found and offset <= stat.st_size
    stream = open(path, "rb")
    stream.seek(offset if resumed else 0)
    return _Response(stream, stat.st_size, resumed, found)


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    match = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", header or "")
    if not match:
        return None, None
    return int(match.group(1)), int(match.group(3)) if match.group(3) != "*" else None


def _saved_validator(part: str, url: str) -> str | None:
    """The validator recorded when `part` was started from `url` (None if none, or another url's)."""
    try:
        with open(part + ".json", encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None
    return saved.get("validator") if isinstance(saved, dict) and saved.get("url") == url else None


def _verify(path: str, sha256: str | None, size: int | None) -> str | None:
    """What is wrong with the finished file, or None."""
    actual_size = os.path.getsize(path)
    if size is not None and actual_size != size:
        return f"{actual_size} bytes instead of {size}"
    if sha256:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK_BYTES):
                digest.update(chunk)
        if digest.hexdigest() != sha256.lower():
            return f"sha256 {digest.hexdigest()} instead of {sha256}"
    return None


def _discard(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
